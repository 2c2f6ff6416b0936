/* mse: the clipping range minimising the quantization mean squared error,
 * clipping included.
 *
 * Activations, from the histogram (merged to at most 2048 bins of |x|; each
 * bin is charged the exact mean squared error of values spread evenly over
 * it (hu_cum_err): evaluating bin centres instead aliases, giving false
 * minima where the step is a near-multiple of the bin width):
 *  - symmetric formats, or data on one side of zero: candidates t are the
 *    upper bin edges of |x|; range [-t, t], [0, t] or [-t, 0];
 *  - asymmetric formats with data on both sides: a coarse grid of pairs
 *    lo = min * a/64, hi = max * b/64 with a, b in 16..64 (2401 pairs), on
 *    the signed histogram merged to at most 1024 bins.
 * Weights, exactly on the values, per channel: t = absmax * (1 - i/100),
 * i = 0..80 (asymmetric: both ends scaled by that factor), minimising
 * sum (w - fakequant(w))^2. Ties keep the wider range. */
#include <math.h>
#include <stdlib.h>

#include "hist_util.h"
#include "qlens-plugin.h"

#define MSE_MAX_BINS 2048
#define MSE_ASYM_BINS 1024

/* Expected squared error of the histogram a[0..n) under grid g, bin j
 * covering [e0 + j w, e0 + (j+1) w) with its values spread evenly. */
static double mse_bins(const double *a, double e0, double w, int n, const hu_grid *g)
{
    double acc = 0, prev = hu_cum_err(g, e0);
    for (int j = 0; j < n; j++) {
        double cur = hu_cum_err(g, e0 + (j + 1) * w);
        acc += a[j] * (cur - prev);
        prev = cur;
    }
    return acc / w;
}

/* Symmetric or one-sided: t over the upper edges of the |x| bins. */
static qlp_result mse_abs(const qlp_hist *h, const qlp_format *fmt, double mn, double mx,
                          double *lo, double *hi, char *err, size_t errlen)
{
    int nb = 0;
    double w = 0;
    uint64_t *u = hu_fold_abs(h, MSE_MAX_BINS, &nb, &w);
    double *a = malloc((size_t)(nb + 1) * sizeof *a);
    if (!u || !a) {
        free(u);
        free(a);
        return hu_fail(err, errlen, "out of memory");
    }
    for (int j = 0; j < nb; j++)
        a[j] = (double)u[j];
    /* The grid of [0, t]: symmetric formats use their positive side; a
     * one-sided asymmetric range uses every level. |x| >= 0, so the lower
     * clip never applies. */
    hu_grid g0;
    hu_qrange(fmt, &g0.qmin, &g0.qmax);
    double levels = fmt->symmetric ? g0.qmax - (fmt->is_signed ? 0 : ldexp(1.0, fmt->bits - 1))
                                   : g0.qmax - g0.qmin;
    hu_grid g = {0, 0, -levels, levels};
    double best = INFINITY, t = 0;
    for (int k = 0; k < nb; k++) {
        double tk = (k + 1) * w;
        g.s = tk / levels;
        double e = mse_bins(a, 0, w, nb, &g);
        if (e < best) {
            best = e;
            t = tk;
        }
    }
    t = fmin(t, fmax(fabs(mn), fabs(mx)));
    *lo = mn >= 0 ? 0.0 : fmax(mn, -t);
    *hi = mx <= 0 ? 0.0 : fmin(mx, t);
    free(u);
    free(a);
    return QLP_OK;
}

/* Asymmetric with both signs: coarse grid of (lo, hi) pairs. */
static qlp_result mse_pairs(const qlp_hist *h, const qlp_format *fmt, double mn, double mx,
                            double *lo, double *hi, char *err, size_t errlen)
{
    int first = 0, last = h->nbins - 1;
    while (first < last && h->counts[first] == 0)
        first++;
    while (last > first && h->counts[last] == 0)
        last--;
    int used = last - first + 1, f = (used + MSE_ASYM_BINS - 1) / MSE_ASYM_BINS;
    int n = (used + f - 1) / f;
    double w = (h->hi - h->lo) / h->nbins;
    double *a = calloc((size_t)n, sizeof *a);
    if (!a)
        return hu_fail(err, errlen, "out of memory");
    for (int j = first; j <= last; j++)
        a[(j - first) / f] += (double)h->counts[j];
    double best = INFINITY;
    for (int ia = 16; ia <= 64; ia++) {
        for (int ib = 16; ib <= 64; ib++) {
            double l = mn * ia / 64, u = mx * ib / 64;
            hu_grid g = hu_grid_make(fmt, l, u);
            double e = mse_bins(a, h->lo + first * w, w * f, n, &g);
            if (e < best) {
                best = e;
                *lo = l;
                *hi = u;
            }
        }
    }
    free(a);
    return QLP_OK;
}

static qlp_result mse_act(const qlp_params *p, const qlp_hist *h, const qlp_format *fmt,
                          double *lo, double *hi, char *err, size_t errlen)
{
    if (hu_check(h, err, errlen) != QLP_OK)
        return QLP_ERROR;
    if (fmt->bits < 2 || fmt->bits > 30)
        return hu_fail(err, errlen, "unsupported bit width %d", fmt->bits);
    double mn, mx;
    hu_extremes(h, &mn, &mx);
    if (mn == mx || !(h->hi > h->lo)) { /* constant data: nothing to clip */
        *lo = fmin(mn, 0.0);
        *hi = fmax(mx, 0.0);
        return QLP_OK;
    }
    if (fmt->symmetric || mn >= 0 || mx <= 0)
        return mse_abs(h, fmt, mn, mx, lo, hi, err, errlen);
    return mse_pairs(h, fmt, mn, mx, lo, hi, err, errlen);
}

static qlp_result mse_weight(const qlp_params *p, const float *w, int64_t channels, int64_t k,
                             const qlp_format *fmt, double *lo, double *hi, char *err,
                             size_t errlen)
{
    if (!w || channels <= 0 || k <= 0)
        return hu_fail(err, errlen, "no weights (%lld channels x %lld)", (long long)channels,
                       (long long)k);
    if (fmt->bits < 2 || fmt->bits > 30)
        return hu_fail(err, errlen, "unsupported bit width %d", fmt->bits);
    for (int64_t ch = 0; ch < channels; ch++) {
        const float *row = w + ch * k;
        double mn = 0, mx = 0;
        for (int64_t j = 0; j < k; j++) {
            if (!isfinite(row[j]))
                return hu_fail(err, errlen, "weight %lld of channel %lld is %g",
                               (long long)j, (long long)ch, row[j]);
            mn = fmin(mn, row[j]);
            mx = fmax(mx, row[j]);
        }
        double amax = fmax(-mn, mx), best = INFINITY;
        lo[ch] = hi[ch] = 0;
        if (amax == 0)
            continue;
        for (int i = 0; i <= 80; i++) {
            double f = 1 - i / 100.0;
            double l = fmt->symmetric ? -amax * f : mn * f, u = fmt->symmetric ? amax * f : mx * f;
            hu_grid g = hu_grid_make(fmt, l, u);
            double e = 0;
            for (int64_t j = 0; j < k; j++) {
                double d = row[j] - hu_fq(&g, row[j]);
                e += d * d;
            }
            if (e < best) {
                best = e;
                lo[ch] = l;
                hi[ch] = u;
            }
        }
    }
    return QLP_OK;
}

static const qlp_plugin mse_plugin = {
    .abi_version = QLP_ABI_VERSION,
    .name = "mse",
    .summary = "the clipping range minimising quantization MSE (histogram; weights exact)",
    .kinds = QLP_KIND_ACTIVATION | QLP_KIND_WEIGHT,
    .n_params = 0,
    .params = NULL,
    .act_range = mse_act,
    .weight_range = mse_weight,
};

const qlp_plugin *QLENS_PLUGIN_ENTRY(void)
{
    return &mse_plugin;
}
