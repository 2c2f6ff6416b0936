/* Output files written atomically: a temporary file in the same folder,
 * renamed over the destination only once it is complete, so a failed or
 * interrupted write never leaves a half-written file behind. */
#ifndef QL_OUTFILE_H
#define QL_OUTFILE_H

#include <stdio.h>

#include "engine/status.h"

typedef struct outfile {
    FILE *f;     /* write here */
    char *path;  /* owned */
    char *tmp;   /* owned */
} outfile;

ql_status outfile_open(outfile *o, const char *path, ql_error *err);
/* Flushes, syncs and renames into place; closes in any case. */
ql_status outfile_commit(outfile *o, ql_error *err);
/* Closes and removes the temporary file (safe after a failed commit). */
void outfile_abort(outfile *o);

#endif
