/* Output files written atomically: a temporary file in the destination's
 * folder, synced and renamed over the destination only once complete, so a
 * failed or interrupted write never leaves a half-written file and never
 * damages the file it would replace. Every writer of the project uses it. */
#ifndef QL_OUTFILE_H
#define QL_OUTFILE_H

#include <stddef.h>
#include <stdio.h>

#include "status.h"

typedef struct ql_outfile {
    FILE *f;     /* write here */
    char *path;  /* owned */
    char *tmp;   /* owned */
} ql_outfile;

/* Creates the temporary file (mode as a plain fopen would give). */
ql_status ql_outfile_open(ql_outfile *o, const char *path, ql_error *err);
/* Flushes, syncs and renames into place; closes and cleans up in any case. */
ql_status ql_outfile_commit(ql_outfile *o, ql_error *err);
/* Closes and removes the temporary file (safe after a failed commit). */
void ql_outfile_abort(ql_outfile *o);
/* The whole of a buffer, atomically. */
ql_status ql_write_file_atomic(const char *path, const void *buf, size_t len, ql_error *err);

#endif
