/* A session: the model, its calibration and evaluation data, the quant
 * config with its encodings, calibration statistics, results (eval
 * metrics, sensitivity table) and the journal. Commands (command.h) are the
 * only way to change it; each change is undoable because the state is a
 * small struct of reference-counted heavy objects plus a cloned config. */
#ifndef QL_SESSION_H
#define QL_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/calibrate.h"
#include "engine/dataset.h"
#include "engine/metrics.h"
#include "engine/onnx.h"
#include "engine/plugin.h"
#include "engine/qconfig.h"
#include "engine/qnet.h"
#include "engine/sensitivity.h"
#include "journal.h"
#include "script.h"

/* Progress of a long command's phase ("statistics", "eval", ...); return
 * false to cancel. Same shape as ql_calib_progress_fn. */
typedef bool (*session_progress_fn)(void *user, const char *phase, int64_t done, int64_t total);
typedef void (*session_log_fn)(void *user, const char *msg);

typedef struct session_opts {
    FILE *out;                      /* output of show/eval/echo/help; NULL: stdout */
    int n_threads;                  /* <= 0: online cores (results never depend on it) */
    int64_t batch;                  /* samples per batch; <= 0: 32 (results never depend on it) */
    session_progress_fn progress;   /* optional */
    void *progress_user;
    session_log_fn log;             /* optional: engine notes for the user */
    void *log_user;
    const volatile int *cancel;     /* optional: set non-zero to cancel a long command */
    bool timings;                   /* print wall times (off: output is deterministic) */
} session_opts;

/* Reference-counted heavy objects shared between the current state and
 * undo snapshots; never changed once made. Counts are not atomic: a session
 * is used by one thread at a time. */
typedef struct ses_rc {
    int refs;
    void (*destroy)(struct ses_rc *);
} ses_rc;

typedef struct ses_model {
    ses_rc rc;
    ql_model *m;
    ql_qnet *q;
} ses_model;

typedef struct ses_data {
    ses_rc rc;
    ql_dataset *d;       /* conformed to the model's input */
    int64_t *labels;     /* NULL without labels */
    int64_t n_labels;
} ses_data;

typedef struct ses_stats {
    ses_rc rc;
    ql_calib_stats *s;
    const ses_data *from; /* the calibration data they were collected on (a reference) */
} ses_stats;

typedef struct ses_sens {
    ses_rc rc;
    ql_sens_table *t;     /* sorted by metric */
    ql_sens_metric metric;
} ses_sens;

/* The last cumulative curve. */
typedef struct ses_curve {
    ses_rc rc;
    ql_curve *c;
    ql_sens_metric ranked_by; /* the metric its table was sorted by */
} ses_curve;

/* The last eval's metrics. A float-only eval (`eval float`) fills only
 * m.n and m.correct_ref. */
/* Outputs whose metrics an eval keeps one by one (the joint metrics cover
 * them all). */
#define SES_EVAL_OUTPUTS 16

typedef struct ses_eval {
    bool valid;
    bool float_only;
    ql_metrics m;         /* every float output, joined per sample */
    int n_out;            /* the model's outputs, at most SES_EVAL_OUTPUTS */
    ql_metrics out[SES_EVAL_OUTPUTS]; /* each output alone (n == 0: not float) */
    bool labels;
    unsigned cfg_gen;     /* the config generation it was measured on */
    double seconds;       /* wall time of inference: never printed without timings */
    int64_t batch;        /* the batch size and threads it ran with */
    int threads;
} ses_eval;

/* The last autoprec: its target and the steps taken. */
typedef struct ses_autoprec {
    ses_rc rc;
    ql_target target;
    ql_autoprec_result r;
} ses_autoprec;

/* Everything undo restores. */
typedef struct session_state {
    ses_model *model;
    ses_data *calib, *eval;
    ses_stats *stats;
    ql_qconfig *cfg;      /* owned; never NULL */
    unsigned cfg_gen;     /* bumped by every change of the config */
    ses_eval last_eval;
    ses_sens *sens;
    ses_curve *curve;
    ses_autoprec *autoprec;
    int journal_len;      /* journal entries that lead to this state */
} session_state;

/* An undo or redo step: the state to go back to, and for redo the journal
 * lines undo took away. */
typedef struct session_step {
    session_state st;
    char **lines;
    int n_lines;
} session_step;

typedef struct session {
    session_opts o;
    ql_plugins *plugins;
    script_vars vars;
    session_state cur;
    journal j;
    session_step *undo, *redo;
    int n_undo, n_redo, cap_undo, cap_redo;
} session;

/* A new empty session (no model; target-default config). Scans plugins. */
ql_status session_new(const session_opts *o, session **out, ql_error *err);
void session_free(session *s);
/* Defines ${NAME} for the command lines that follow. */
ql_status session_set_var(session *s, const char *name, const char *value, ql_error *err);
/* Where the output of the commands that follow goes (NULL: stdout). */
void session_set_out(session *s, FILE *out);

/* Parses and runs one command line. A failing command leaves the session
 * as it was; its message says "COMMAND: reason". */
ql_status session_exec(session *s, const char *line, ql_error *err);
/* session_exec with the location prefixed on failure: "SOURCE:LINE: reason". */
ql_status session_exec_at(session *s, const char *line, const char *source, long lineno,
                          ql_error *err);
/* Runs lines in order, stopping at the first failure ("SOURCE:N: reason",
 * N counting from 1). For front ends that build a command list. */
ql_status session_run_lines(session *s, const char *const *lines, int n, const char *source,
                            ql_error *err);

/* Undo and redo (the `undo`/`redo` commands). */
ql_status session_undo(session *s, ql_error *err);
ql_status session_redo(session *s, ql_error *err);

/* ---- for command handlers (command.c, report.c) ---- */

FILE *session_out(const session *s);
/* New reference-counted objects (refs = 1); NULL on OOM (inputs then freed). */
ses_model *ses_model_new(ql_model *m, ql_qnet *q);
ses_data *ses_data_new(ql_dataset *d, int64_t *labels, int64_t n_labels);
ses_stats *ses_stats_new(ql_calib_stats *st, const ses_data *from);
ses_sens *ses_sens_new(ql_sens_table *t, ql_sens_metric metric);
/* Takes over r's steps (r is cleared, also on OOM). */
/* Takes c (freed on failure). */
ses_curve *ses_curve_new(ql_curve *c, ql_sens_metric ranked_by);
ses_autoprec *ses_autoprec_new(const ql_target *target, ql_autoprec_result *r);
void *ses_retain(void *obj); /* obj may be NULL */
void ses_release(void *obj); /* obj may be NULL */
/* Replaces *slot (releasing the old object) with obj, taking over obj's reference. */
void ses_set(void *slot, void *obj);

/* Engine options carrying the session's threads, progress, log and cancel. */
ql_calib_opts session_calib_opts(session *s);
void session_log(session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool session_progress(session *s, const char *phase, int64_t done, int64_t total);
bool session_cancelled(const session *s);

#endif
