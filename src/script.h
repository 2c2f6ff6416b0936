/* The command language: splitting a line into words (shell-like quoting,
 * `#` comments, ${NAME} variables), quoting words back into the canonical
 * form the journal records, and running a file of commands on a session.
 * The grammar is documented in qlens-script(5). */
#ifndef QL_SCRIPT_H
#define QL_SCRIPT_H

#include <stdio.h>

#include "engine/status.h"

/* Variables for ${NAME} expansion: NAME is [A-Za-z_][A-Za-z0-9_]*. */
typedef struct script_vars {
    int n;
    char **names;  /* owned */
    char **values; /* owned */
} script_vars;

/* Sets (or replaces) a variable; fails on a bad name or OOM. */
ql_status script_vars_set(script_vars *v, const char *name, const char *value, ql_error *err);
/* Parses "NAME=VALUE" (the --var option). */
ql_status script_vars_set_arg(script_vars *v, const char *arg, ql_error *err);
const char *script_vars_get(const script_vars *v, const char *name);
void script_vars_clear(script_vars *v);

/* Splits one line into words: blanks separate words; '...' is literal;
 * "..." expands ${NAME} and takes \" \\ \$ as escapes; outside quotes a
 * backslash escapes the next character; a `#` starting a word begins a
 * comment. ${NAME} (and ${NAME:-default}) expands to one word part, never
 * split. vars may be NULL (then any ${...} is an error). On success *argv
 * is a malloc'd, NULL-terminated array of malloc'd words (free with
 * script_argv_free); a blank or comment line gives *argc == 0. */
ql_status script_split(const char *line, const script_vars *vars, int *argc, char ***argv,
                       ql_error *err);
void script_argv_free(char **argv);

/* Writes word w into buf (size n; terminated when n > 0) in canonical form:
 * bare when it has only safe characters, else in '...' or, if it holds a
 * quote, "..." with \" \\ \$ escaped; script_split gives back exactly w.
 * Returns the length of the whole text, as snprintf does. */
size_t script_quote(const char *w, char *buf, size_t n);
/* Joins words in canonical form, separated by single spaces (malloc'd,
 * NULL on OOM). */
char *script_join(int argc, char *const *argv);

struct session;
/* Runs the file at path on s line by line, stopping at the first failing
 * line with "PATH:LINE: reason" in err. "-" reads standard input. The
 * variable SCRIPT_DIR (the file's folder) is set unless the session has it. */
ql_status script_run_file(struct session *s, const char *path, ql_error *err);

#endif
