/* A one-line progress bar on stderr, drawn only when stderr is a terminal. */
#ifndef QL_PROGRESS_H
#define QL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct progress {
    bool enabled;
    const char *label;
    int64_t total;
    int last_permille;
    double start;
} progress;

double progress_now(void);
void progress_start(progress *p, const char *label, int64_t total);
void progress_update(progress *p, int64_t done);
void progress_finish(progress *p);

#endif
