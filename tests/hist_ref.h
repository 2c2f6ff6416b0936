/* The histogram grid written out independently of engine/calib_stats.c,
 * shared by the tests that check it: 8192 bins of width R/4096 over
 * [-R, R), R a power of two. */
#ifndef QL_TESTS_HIST_REF_H
#define QL_TESTS_HIST_REF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/calib_stats.h"

/* The smallest power of two >= a (a > 0). */
static inline double ref_pow2(double a)
{
    double r = 1;
    while (r < a)
        r *= 2;
    while (r / 2 >= a)
        r /= 2;
    return r;
}

/* Bin of x (x == R in the top bin, infinities in the edge bins). */
static inline int ref_bin(double R, double x)
{
    const int nb = QL_HIST_BINS;
    if (isinf(x))
        return x < 0 ? 0 : nb - 1;
    if (R == 0)
        return nb / 2;
    double k = floor(x / (R / (nb / 2))); /* division by a power of two: exact */
    int b = (int)k + nb / 2;
    return b < 0 ? 0 : b >= nb ? nb - 1 : b;
}

/* counts[QL_HIST_BINS] of the non-NaN values of x on the grid of range R. */
static inline void ref_hist(const float *x, int64_t n, double R, uint64_t *counts)
{
    memset(counts, 0, QL_HIST_BINS * sizeof *counts);
    for (int64_t i = 0; i < n; i++)
        if (!isnan(x[i]))
            counts[ref_bin(R, x[i])]++;
}

#endif
