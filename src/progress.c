/* Progress bar on stderr. */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void progress_start(progress *p, const char *label, int64_t total)
{
    p->enabled = isatty(STDERR_FILENO);
    p->label = label;
    p->total = total > 0 ? total : 1;
    p->last_permille = -1;
    p->start = progress_now();
}

void progress_update(progress *p, int64_t done)
{
    if (!p->enabled)
        return;
    int permille = (int)(done * 1000 / p->total);
    if (permille == p->last_permille)
        return;
    p->last_permille = permille;
    int width = 30, fill = permille * width / 1000;
    double el = progress_now() - p->start;
    fprintf(stderr, "\r%s [", p->label);
    for (int i = 0; i < width; i++)
        fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %3d%% %lld/%lld %.1fs", permille / 10, (long long)done,
            (long long)p->total, el);
    fflush(stderr);
}

void progress_finish(progress *p)
{
    if (!p->enabled)
        return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
}
