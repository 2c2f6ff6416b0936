/* Subcommands of the qlens program. Each parses its own options and calls
 * the engine; nothing here computes anything the engine could. */
#ifndef QL_CLI_H
#define QL_CLI_H

int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_plugins(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_sensitivity(int argc, char **argv);
int cmd_autoprec(int argc, char **argv);
int cmd_run(int argc, char **argv);

/* Shared option helpers: strict integer parsing with a located message. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max,
                  long *out);
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cli_common.c */
#include <stdbool.h>
#include <stdint.h>

#include "engine/dataset.h"
#include "engine/onnx.h"
#include "progress.h"

/* Set by Ctrl-C (cli_catch_interrupt); the engine polls it to cancel. */
extern volatile int cli_cancel_flag;
void cli_catch_interrupt(void);
/* Loads and checks data (and labels when labels_path is set) for m's one input. */
ql_status cli_load_data(const ql_model *m, const char *data, const char *labels_path,
                        int64_t limit, ql_dataset **d, int64_t **labels, int64_t *n_labels,
                        ql_error *err);
/* A progress bar per phase, for ql_calib_progress_fn; returns false after Ctrl-C. */
typedef struct cli_phases {
    char label[160];
    progress bar;
} cli_phases;
bool cli_phase_progress(void *user, const char *phase, int64_t done, int64_t total);
void cli_phases_finish(cli_phases *p);
/* Log callback: "qlens CMD: msg" on stderr; user is the command name. */
void cli_log(void *user, const char *msg);

#endif
