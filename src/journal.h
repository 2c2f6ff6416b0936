/* The journal: the command lines a session has executed, in canonical
 * form, as a stack that undo pops and redo pushes back, so that saving it
 * gives a script that rebuilds the session as it stands. */
#ifndef QL_JOURNAL_H
#define QL_JOURNAL_H

#include "engine/status.h"

typedef struct journal {
    int n, cap;
    char **lines; /* owned */
} journal;

/* Appends a copy of line. */
ql_status journal_append(journal *j, const char *line, ql_error *err);
/* Removes the entries from index len on and hands them over (a malloc'd
 * array of owned lines; *n_out may be 0 and *out NULL). */
void journal_cut(journal *j, int len, char ***out, int *n_out);
/* Appends owned lines (as journal_cut gives them), taking them over. */
ql_status journal_paste(journal *j, char **lines, int n, ql_error *err);
void journal_clear(journal *j);

/* Writes the journal as a script, atomically, after a header comment. */
ql_status journal_save(const journal *j, const char *path, ql_error *err);

#endif
