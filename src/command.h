/* The command table: every command a session understands, one X-macro row
 * each (words, argument synopsis, flags, handler, help). The same rows make
 * the dispatcher, the `help` command, `qlens run --list-commands`, and the
 * list in qlens-script(5) (tests/test_command.c holds the manual to it). */
#ifndef QL_COMMAND_H
#define QL_COMMAND_H

#include <stdio.h>

#include "session.h"

enum {
    CMDF_CHANGES = 1u << 0,   /* changes the session: snapshot for undo, roll back on failure */
    CMDF_NOJOURNAL = 1u << 1, /* not recorded in the journal (undo, redo, help, save script) */
};

/* Runs one command: argv holds the words after the command's name (handlers
 * may replace a word with its canonical form, e.g. an algorithm spec, for
 * the journal). The error message says what is wrong, without the command
 * name, which the caller adds. */
typedef ql_status (*command_fn)(session *s, int argc, char **argv, ql_error *err);

/* X(name, synopsis, flags, handler, help). Order is the order of `help`
 * and of the manual. Room is left for march/compile/verify (later). */
#define COMMAND_LIST(X)                                                                        \
    X("load", "MODEL", CMDF_CHANGES, sc_load_model,                                           \
      "load an ONNX model; data, statistics, results and layer overrides are dropped, "        \
      "the default settings are kept")                                                         \
    X("data calib", "PATH [limit N]", CMDF_CHANGES, sc_data_calib,                            \
      "calibration samples (a folder of .npy files, one batched .npy, or IDX); the first N "   \
      "only with limit")                                                                       \
    X("data eval", "PATH [labels L] [limit N]", CMDF_CHANGES, sc_data_eval,                   \
      "evaluation samples, with integer class labels L for accuracy")                          \
    X("calibrate", "[algo A] [weight-algo W] [weight-bits N] [act-bits N] [per-tensor|per-channel]", \
      CMDF_CHANGES, sc_calibrate,                                                             \
      "set the given defaults, collect activation statistics (once per calibration data) "     \
      "and compute every encoding")                                                            \
    X("collect stats", "", CMDF_CHANGES, sc_collect_stats,                                    \
      "collect activation statistics over the calibration data and leave the encodings as "    \
      "they are (for autoprec on a loaded config)")                                            \
    X("set", "[layer NAME] FIELD VALUE", CMDF_CHANGES, sc_set,                                \
      "change a default (or one layer's override): precision int8|int16|float, act-algo A, "  \
      "weight-algo W, weight-bits N, per-channel true|false; re-encodes from the statistics")  \
    X("reset", "[layer NAME] [FIELD]", CMDF_CHANGES, sc_reset,                                \
      "remove a layer's override (or one field of it), or restore the built-in defaults")      \
    X("eval", "[float]", CMDF_CHANGES, sc_eval,                                               \
      "run float and fake-quantized models on the evaluation data and compare their outputs; "  \
      "with float, only the float model (top-1 with labels)")                                  \
    X("sensitivity",                                                                         \
      "[mode M] [metric M] [limit N] [layer NAME] [cache-mb MB] [brute-force] [keep-partial]", \
      CMDF_CHANGES, sc_sensitivity,                                                           \
      "per-layer sensitivity on the first N evaluation samples, worst first by metric; modes " \
      "single, all-but, weights, activations; keep-partial keeps the rows done when cancelled") \
    X("curve", "[prefer float|int16] [steps N] [keep-partial]", CMDF_CHANGES, sc_curve,       \
      "the cumulative curve of the last sensitivity table: its layers, most sensitive first, "  \
      "set one after another to float (or int16), the model measured after each step on the "  \
      "table's samples; keep-partial keeps the steps done when cancelled")                     \
    X("autoprec", "TARGET [prefer int16|float] [march M]", CMDF_CHANGES, sc_autoprec,         \
      "raise the most sensitive layers' precision until TARGET holds, e.g. cosine>=0.999 or "  \
      "top1_drop<=0.5; with march, rank by gain per cost on M")                                \
    X("show layers", "", 0, sc_show_layers, "the layer table with effective settings")        \
    X("show layer", "NAME", 0, sc_show_layer,                                                 \
      "one layer: settings (overridden ones marked), encodings, statistics")                   \
    X("show stats", "[NAME]", 0, sc_show_stats,                                               \
      "calibration statistics of every quantized tensor, or of one tensor or layer")           \
    X("show config", "", 0, sc_show_config, "defaults, layer overrides and encodings summary") \
    X("show eval", "", 0, sc_show_eval, "the last eval's metrics")                            \
    X("show sensitivity", "", 0, sc_show_sensitivity, "the last sensitivity table")           \
    X("show curve", "", 0, sc_show_curve, "the last cumulative curve")                        \
    X("load config", "FILE", CMDF_CHANGES, sc_load_config,                                    \
      "replace the quant config with FILE's (checked against the model)")                      \
    X("save config", "FILE", 0, sc_save_config, "write the quant config as JSON")             \
    X("load stats", "FILE", CMDF_CHANGES, sc_load_stats,                                      \
      "use the calibration statistics in FILE (from 'save stats'; checked against the model) "  \
      "instead of a pass over the calibration data")                                          \
    X("save stats", "FILE", 0, sc_save_stats, "write the calibration statistics")             \
    X("export csv", "FILE", 0, sc_export_csv, "write the last sensitivity table as CSV")      \
    X("export csv layers", "FILE", 0, sc_export_csv_layers, "write the layer table as CSV")   \
    X("export csv curve", "FILE", 0, sc_export_csv_curve, "write the last cumulative curve as CSV") \
    X("save script", "FILE", CMDF_NOJOURNAL, sc_save_script,                                  \
      "write the journal: a script that rebuilds this session")                                \
    X("undo", "", CMDF_NOJOURNAL, sc_undo, "undo the last change")                            \
    X("redo", "", CMDF_NOJOURNAL, sc_redo, "redo the last undone change")                     \
    X("echo", "[TEXT...]", 0, sc_echo, "print the words, separated by one blank")             \
    X("help", "[COMMAND]", CMDF_NOJOURNAL, sc_help, "list the commands, or those named COMMAND")

typedef struct command_def {
    const char *name;     /* one or more words */
    const char *synopsis; /* arguments after the name, "" if none */
    unsigned flags;
    command_fn run;
    const char *help;
} command_def;

/* The handlers (command.c, tune.c, analysis.c, report.c). */
#define COMMAND_DECL_(n, syn, fl, fn, h) ql_status fn(session *s, int argc, char **argv, ql_error *err);
COMMAND_LIST(COMMAND_DECL_)
#undef COMMAND_DECL_

extern const command_def command_table[];
extern const int command_count;

/* The row whose words start argv, the longest if several do; *n_words
 * gets the number of name words. NULL if none. */
const command_def *command_lookup(int argc, char *const *argv, int *n_words);
/* The error for a line no row matches ("unknown command 'x' (see 'help')",
 * or the subcommands of a known first word). */
ql_status command_unknown(int argc, char *const *argv, ql_error *err);
/* Writes "NAME SYNOPSIS" and the help text of every row, or of the rows
 * whose name starts with the given words. Returns the rows written. */
int command_help(FILE *f, int argc, char *const *argv);

/* ---- helpers for handlers ---- */

/* "expects SYNOPSIS" (or "takes no arguments") for the row called name. */
ql_status command_usage(const char *name, ql_error *err);

/* Keyword options: key VALUE pairs, or a lone key when flag is set. at gets
 * the argv index of the value (of the key for flags), -1 when absent. An
 * unknown word, a missing value or a repeated key is an error. */
typedef struct command_opt {
    const char *key;
    bool flag;
    int at;
} command_opt;
ql_status command_parse_opts(int argc, char *const *argv, command_opt *opts, int n, ql_error *err);
/* A decimal integer in [min, max]; what names it in the message. */
ql_status command_parse_int(const char *what, const char *s, long min, long max, long *out,
                        ql_error *err);
/* Replaces argv[i] by a copy of text (for canonical forms in the journal). */
ql_status command_replace_arg(char **argv, int i, const char *text, ql_error *err);
/* Preconditions, with the message telling the user what to run first. */
ql_status command_need_model(const session *s, ql_error *err);
ql_status command_need_encodings(const session *s, ql_error *err);
ql_status command_need_eval_data(const session *s, ql_error *err);
/* The layer index of name, or an error naming it. */
ql_status command_find_layer(const session *s, const char *name, int *layer, ql_error *err);

#endif
