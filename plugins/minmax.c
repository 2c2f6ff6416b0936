/* minmax: the observed range. Activations: [min, max] over the calibration
 * data; weights: [min, max] of each channel's row. Exact, no clipping. */
#include <math.h>

#include "hist_util.h"
#include "qlens-plugin.h"

static qlp_result minmax_act(const qlp_params *p, const qlp_hist *h, const qlp_format *fmt,
                             double *lo, double *hi, char *err, size_t errlen)
{
    if (!h || h->count == 0)
        return hu_fail(err, errlen, "no statistics (the tensor saw no values)");
    if (isnan(h->min) || isnan(h->max) || h->min > h->max)
        return hu_fail(err, errlen, "bad observed extremes [%g, %g]", h->min, h->max);
    if (isinf(h->min) || isinf(h->max))
        return hu_fail(err, errlen,
                       "infinite values observed (range [%g, %g]): minmax cannot make a "
                       "finite range; use percentile, kl or mse",
                       h->min, h->max);
    *lo = h->min;
    *hi = h->max;
    return QLP_OK;
}

static qlp_result minmax_weight(const qlp_params *p, const float *w, int64_t channels, int64_t k,
                                const qlp_format *fmt, double *lo, double *hi, char *err,
                                size_t errlen)
{
    if (!w || channels <= 0 || k <= 0)
        return hu_fail(err, errlen, "no weights (%lld channels x %lld)", (long long)channels,
                       (long long)k);
    for (int64_t c = 0; c < channels; c++) {
        const float *row = w + c * k;
        float mn = row[0], mx = row[0];
        for (int64_t j = 0; j < k; j++) {
            if (!isfinite(row[j]))
                return hu_fail(err, errlen, "weight %lld of channel %lld is %g",
                               (long long)j, (long long)c, row[j]);
            mn = row[j] < mn ? row[j] : mn;
            mx = row[j] > mx ? row[j] : mx;
        }
        lo[c] = mn;
        hi[c] = mx;
    }
    return QLP_OK;
}

static const qlp_plugin minmax_plugin = {
    .abi_version = QLP_ABI_VERSION,
    .name = "minmax",
    .summary = "observed [min, max] (activations per tensor, weights per channel)",
    .kinds = QLP_KIND_ACTIVATION | QLP_KIND_WEIGHT,
    .n_params = 0,
    .params = NULL,
    .act_range = minmax_act,
    .weight_range = minmax_weight,
};

const qlp_plugin *QLENS_PLUGIN_ENTRY(void)
{
    return &minmax_plugin;
}
