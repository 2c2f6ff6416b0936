/* percentile: clips at a percentile of the calibration values, read from the
 * histogram. Symmetric formats: t = the p-th percentile of |x|, range [-t, t]
 * (or [0, t] when nothing negative was seen); asymmetric formats: the
 * (100-p)-th and p-th percentiles of x. The answer is a bin edge (the upper
 * edge of the bin where the cumulative count first reaches p% of the values),
 * clamped to the observed extremes, so it is within one bin of the exact
 * percentile. */
#include <math.h>
#include <stdlib.h>

#include "hist_util.h"
#include "qlens-plugin.h"

static const qlp_param_def percentile_params[] = {
    {"p", QLP_PARAM_FLOAT, 99.99, 50, 100, "percentile of the values kept inside the range"},
};

static qlp_result percentile_act(const qlp_params *p, const qlp_hist *h, const qlp_format *fmt,
                                 double *lo, double *hi, char *err, size_t errlen)
{
    double pct = p && p->n >= 1 ? p->v[0] : percentile_params[0].dflt;
    if (!(pct >= 50 && pct <= 100))
        return hu_fail(err, errlen, "p = %g is outside [50, 100]", pct);
    if (hu_check(h, err, errlen) != QLP_OK)
        return QLP_ERROR;
    double mn, mx;
    hu_extremes(h, &mn, &mx);
    double need = pct / 100.0 * (double)h->count;

    if (fmt->symmetric) {
        int nb = 0;
        double w = 0;
        uint64_t *a = hu_fold_abs(h, h->nbins, &nb, &w);
        if (!a)
            return hu_fail(err, errlen, "out of memory");
        uint64_t cum = 0;
        int k = 0;
        for (; k < nb - 1; k++) {
            cum += a[k];
            if ((double)cum >= need)
                break;
        }
        free(a);
        double t = nb > 0 ? (k + 1) * w : 0.0;
        t = fmin(t, fmax(fabs(mn), fabs(mx)));
        hu_sym_range(h, t, lo, hi);
        return QLP_OK;
    }

    if (!(h->hi > h->lo)) { /* every value is the same */
        *lo = mn;
        *hi = mx;
        return QLP_OK;
    }
    int n = h->nbins;
    double w = (h->hi - h->lo) / n;
    uint64_t cum = 0;
    int b = 0;
    for (; b < n - 1; b++) {
        cum += h->counts[b];
        if ((double)cum >= need)
            break;
    }
    *hi = fmin(h->lo + (b + 1) * w, mx);
    cum = 0;
    for (b = n - 1; b > 0; b--) { /* mirrored: the tail above holds p% */
        cum += h->counts[b];
        if ((double)cum >= need)
            break;
    }
    *lo = fmax(h->lo + b * w, mn);
    return QLP_OK;
}

static const qlp_plugin percentile_plugin = {
    .abi_version = QLP_ABI_VERSION,
    .name = "percentile",
    .summary = "clip at the p-th percentile of |x| (asymmetric: of x, both tails)",
    .kinds = QLP_KIND_ACTIVATION,
    .n_params = 1,
    .params = percentile_params,
    .act_range = percentile_act,
};

const qlp_plugin *QLENS_PLUGIN_ENTRY(void)
{
    return &percentile_plugin;
}
