/* Helpers shared by the histogram-based calibration plugins: input checks,
 * the |x| histogram (folded about zero, or split at zero into its two
 * sides; merged to a bin budget), and the integer grid of a format for
 * fake-quantization. Header-only, static. */
#ifndef QLENS_HIST_UTIL_H
#define QLENS_HIST_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "qlens-plugin.h"

__attribute__((unused, format(printf, 3, 4))) static qlp_result hu_fail(char *err, size_t errlen,
                                                                        const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return QLP_ERROR;
}

/* Checks a histogram; returns QLP_OK or QLP_ERROR with a message. */
__attribute__((unused)) static qlp_result hu_check(const qlp_hist *h, char *err, size_t errlen)
{
    if (!h || h->count == 0)
        return hu_fail(err, errlen, "no statistics (the tensor saw no values)");
    if (!h->counts || h->nbins <= 0)
        return hu_fail(err, errlen, "histogram has no bins");
    if (!isfinite(h->lo) || !isfinite(h->hi) || h->hi < h->lo)
        return hu_fail(err, errlen, "bad histogram range [%g, %g)", h->lo, h->hi);
    if (isnan(h->min) || isnan(h->max) || h->min > h->max)
        return hu_fail(err, errlen, "bad observed extremes [%g, %g]", h->min, h->max);
    uint64_t sum = 0;
    for (int i = 0; i < h->nbins; i++)
        sum += h->counts[i];
    if (sum != h->count)
        return hu_fail(err, errlen, "histogram counts add up to %llu, not %llu values",
                       (unsigned long long)sum, (unsigned long long)h->count);
    return QLP_OK;
}

/* Observed extremes clamped to the histogram range (infinite values
 * saturate into the edge bins, and so they do here). */
__attribute__((unused)) static void hu_extremes(const qlp_hist *h, double *mn, double *mx)
{
    *mn = h->min < h->lo ? h->lo : h->min > h->hi ? h->hi : h->min;
    *mx = h->max > h->hi ? h->hi : h->max < h->lo ? h->lo : h->max;
}

/* Splits the histogram at zero into two one-sided histograms of |x| on the
 * the histogram's bin width w: pos[k] counts [k w, (k+1) w), neg[k] counts
 * [-(k+1) w, -k w) (exact for a range symmetric about zero with an even
 * bin count; any other is split by bin centres, approximately). Both end at the last
 * non-zero bin of either side and are merged by the same smallest factor
 * leaving at most maxbins bins. Returns the pos array (neg is a second
 * malloc'd array in *neg), or NULL on OOM; *nb == 0 when every value is 0. */
__attribute__((unused)) static uint64_t *hu_split_signed(const qlp_hist *h, int maxbins,
                                                        uint64_t **neg, int *nb, double *width)
{
    int n = h->nbins;
    double w = (h->hi - h->lo) / n;
    double amax = fmax(fabs(h->lo), fabs(h->hi));
    double nad = w > 0 ? ceil(amax / w) : 1;
    int na = nad < 1 ? 1 : nad > (1 << 24) ? (1 << 24) : (int)nad;
    size_t cap = (size_t)(na > n ? na : n) + 1;
    uint64_t *a = calloc(cap, sizeof *a), *b = calloc(cap, sizeof *b);
    *neg = b;
    if (!a || !b) {
        free(a);
        free(b);
        *neg = NULL;
        return NULL;
    }
    if (h->lo == -h->hi && n % 2 == 0) {
        na = n / 2;
        for (int k = 0; k < na; k++) {
            a[k] = h->counts[na + k];
            b[k] = h->counts[na - 1 - k];
        }
    } else {
        for (int j = 0; j < n; j++) {
            double c = h->lo + (j + 0.5) * w;
            int k = w > 0 ? (int)(fabs(c) / w) : 0;
            (c < 0 ? b : a)[k < na ? k : na - 1] += h->counts[j];
        }
    }
    int last = na - 1;
    while (last >= 0 && a[last] == 0 && b[last] == 0)
        last--;
    *width = w;
    if (last < 0 || !(w > 0)) {
        *nb = 0;
        return a;
    }
    int used = last + 1, f = (used + maxbins - 1) / maxbins;
    if (f > 1) {
        int m = (used + f - 1) / f;
        for (int k = 0; k < m; k++) {
            uint64_t sa = 0, sb = 0;
            for (int j = k * f; j < (k + 1) * f && j < used; j++) {
                sa += a[j];
                sb += b[j];
            }
            a[k] = sa;
            b[k] = sb;
        }
        used = m;
        *width = w * f;
    }
    *nb = used;
    return a;
}

/* Builds the histogram of |x| with at most maxbins bins, ending at the last
 * non-zero bin: *nb bins of width *width over [0, nb * width), the two
 * sides of hu_split_signed added. Returns a malloc'd array or NULL on OOM;
 * *nb == 0 when every value is 0 (or the range is empty). */
__attribute__((unused)) static uint64_t *hu_fold_abs(const qlp_hist *h, int maxbins, int *nb,
                                                    double *width)
{
    uint64_t *neg = NULL, *a = hu_split_signed(h, maxbins, &neg, nb, width);
    if (!a)
        return NULL;
    for (int k = 0; k < *nb; k++)
        a[k] += neg[k];
    free(neg);
    return a;
}

/* Symmetric [-t, t], or [0, t] when nothing negative was seen. */
__attribute__((unused)) static void hu_sym_range(const qlp_hist *h, double t, double *lo,
                                                 double *hi)
{
    *lo = h->min >= 0 ? 0.0 : -t;
    *hi = t;
}

/* ---- the integer grid of a format --------------------------------------- */

typedef struct hu_grid {
    double s;          /* scale; 0 when the range is empty (everything -> 0) */
    double zp;         /* zero point */
    double qmin, qmax; /* integer range */
} hu_grid;

/* The integer range: signed symmetric formats use the restricted
 * [-(2^(b-1)-1), 2^(b-1)-1] (scales mirror exactly), others the format's. */
__attribute__((unused)) static void hu_qrange(const qlp_format *f, double *qmin, double *qmax)
{
    double half = ldexp(1.0, f->bits - 1);
    if (f->is_signed && f->symmetric) {
        *qmin = -(half - 1);
        *qmax = half - 1;
    } else if (f->qmin < f->qmax) {
        *qmin = (double)f->qmin;
        *qmax = (double)f->qmax;
    } else {
        *qmin = f->is_signed ? -half : 0;
        *qmax = f->is_signed ? half - 1 : 2 * half - 1;
    }
}

/* The grid quantizing the range [lo, hi] (widened to contain 0; symmetric
 * formats use max(|lo|, |hi|) and a fixed zero point). */
__attribute__((unused)) static hu_grid hu_grid_make(const qlp_format *f, double lo, double hi)
{
    hu_grid g;
    hu_qrange(f, &g.qmin, &g.qmax);
    lo = fmin(lo, 0.0);
    hi = fmax(hi, 0.0);
    if (f->symmetric) {
        double a = fmax(-lo, hi);
        g.zp = f->is_signed ? 0.0 : ldexp(1.0, f->bits - 1);
        g.s = a / (g.qmax - g.zp);
    } else {
        g.s = (hi - lo) / (g.qmax - g.qmin);
        g.zp = g.s > 0 ? g.qmin - nearbyint(lo / g.s) : g.qmin;
        g.zp = fmin(fmax(g.zp, g.qmin), g.qmax);
    }
    return g;
}

/* quantize-dequantize of x: round half to even, saturate. */
__attribute__((unused)) static inline double hu_fq(const hu_grid *g, double x)
{
    if (!(g->s > 0))
        return 0.0;
    double q = nearbyint(x / g->s) + g->zp;
    q = q < g->qmin ? g->qmin : q > g->qmax ? g->qmax : q;
    return (q - g->zp) * g->s;
}

#endif
