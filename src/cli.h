/* Subcommands of the qlens program. Each parses its own options, turns
 * them into command lines of the session language (qlens-script(5)), runs
 * them on a new session and prints the session's results; nothing here
 * computes anything a command could. */
#ifndef QL_CLI_H
#define QL_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "progress.h"
#include "session.h"

int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_plugins(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_sensitivity(int argc, char **argv);
int cmd_autoprec(int argc, char **argv);
int cmd_run(int argc, char **argv);

/* --limit (-n), --batch (-b) and --threads (-t), shared by the commands
 * that run a model: limit_s keeps the text for the session's command line. */
typedef struct cli_run_opts {
    long limit, batch, threads;
    const char *limit_s;
} cli_run_opts;
/* 1 if getopt's c was one of them (stored), -1 after a bad value (message
 * printed: exit 2), 0 otherwise. */
int cli_run_opt(const char *cmd, int c, const char *arg, cli_run_opts *o);

/* Shared option helpers: strict integer parsing with a located message. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max,
                  long *out);
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- cli_common.c ---- */

/* Set by Ctrl-C (cli_catch_interrupt); the engine polls it to cancel. */
extern volatile int cli_cancel_flag;
void cli_catch_interrupt(void);
/* A progress bar per phase, for session_progress_fn; returns false after Ctrl-C. */
typedef struct cli_phases {
    char label[160];
    progress bar;
} cli_phases;
bool cli_phase_progress(void *user, const char *phase, int64_t done, int64_t total);
void cli_phases_finish(cli_phases *p);
/* Adds key: v to a JSON object, or null when !have or v is not finite. */
struct cJSON;
void cli_json_number(struct cJSON *o, const char *key, double v, int have);
/* Prints o (indented) and a newline on stdout and deletes o; 0, or -1 when
 * out of memory. */
int cli_json_print(struct cJSON *o);
/* Log callback: "qlens CMD: msg" on stderr; user is the command name. */
void cli_log(void *user, const char *msg);

/* A subcommand's session: progress bars on stderr (drawn on a terminal),
 * engine notes as "qlens CMD: ...", Ctrl-C cancelling through the session. */
typedef struct cli_session {
    const char *cmd;  /* the subcommand, for messages */
    session *s;
    FILE *quiet;      /* where the output of unshown commands goes */
    cli_phases phases;
} cli_session;
/* threads and batch <= 0: the defaults. Prints the error and returns 1 on failure. */
int cli_session_open(cli_session *c, const char *cmd, long threads, long batch, bool timings);
void cli_session_close(cli_session *c);

/* One command line, as words (quoted when run). */
typedef struct cli_line {
    int n;
    const char *w[32];
} cli_line;
/* Appends words, up to a NULL. */
void cli_words(cli_line *l, ...) __attribute__((sentinel));
/* Appends "key val" when val is set. */
void cli_opt(cli_line *l, const char *key, const char *val);
/* Runs the line on the session; its output goes to stdout when show, else
 * nowhere. On failure prints "qlens CMD: reason" (the reason without the
 * command's name) and returns the status. */
ql_status cli_exec(cli_session *c, const cli_line *l, bool show);
/* Runs "load MODEL". */
ql_status cli_load(cli_session *c, const char *model);
/* The exit status for a failed command: 130 when cancelled, else 1. */
int cli_fail_rc(ql_status st);
/* Checks the value of an algorithm option (NAME[:key=value,...]) against the
 * session's plugins, as the command it becomes will: 0 when usable, else
 * prints "qlens CMD: option OPT: reason" and returns -1, a usage error
 * (exit 2) that must be told from a failure of the work (exit 1). */
int cli_check_algo(const cli_session *c, const char *opt, const char *spec, qlp_kind kind);

#endif
