/* sigma: an example qlens activation algorithm, built out of tree against the
 * installed <qlens-plugin.h>. It clips a tensor at mean +- k standard
 * deviations, both estimated from the calibration histogram. */
#include <math.h>
#include <stdio.h>

#include <qlens-plugin.h>

static const qlp_param_def sigma_params[] = {
    {"k", QLP_PARAM_FLOAT, 4.0, 0.5, 20.0, "half-width of the range in standard deviations"},
};

/* Each bin's values are taken at the bin's centre: the estimate of the mean
 * is off by at most half a bin width. */
static qlp_result sigma_range(const qlp_params *p, const qlp_hist *h, const qlp_format *fmt,
                              double *lo, double *hi, char *err, size_t errlen)
{
    double k = p->v[0];
    (void)fmt; /* the range does not depend on the integer grid */
    if (h->count == 0) {
        snprintf(err, errlen, "no values observed");
        return QLP_ERROR;
    }
    if (h->nbins <= 0 || !h->counts || !(h->hi > h->lo)) {
        *lo = h->min; /* a constant tensor: nothing to clip */
        *hi = h->max;
        return QLP_OK;
    }
    double width = (h->hi - h->lo) / h->nbins, n = 0, sum = 0, sq = 0;
    for (int i = 0; i < h->nbins; i++) {
        double c = (double)h->counts[i];
        n += c;
        sum += c * (h->lo + (i + 0.5) * width);
    }
    double mean = sum / n;
    for (int i = 0; i < h->nbins; i++) {
        double d = h->lo + (i + 0.5) * width - mean;
        sq += (double)h->counts[i] * d * d;
    }
    double sd = sqrt(sq / n);
    /* never wider than what was observed */
    *lo = fmax(h->min, mean - k * sd);
    *hi = fmin(h->max, mean + k * sd);
    if (*lo > *hi) { /* mean +- k sd fell outside [min, max] (coarse bins) */
        *lo = h->min;
        *hi = h->max;
    }
    return QLP_OK;
}

static const qlp_plugin sigma_plugin = {
    .abi_version = QLP_ABI_VERSION,
    .name = "sigma",
    .summary = "clip at mean +- k standard deviations of the histogram",
    .kinds = QLP_KIND_ACTIVATION,
    .n_params = 1,
    .params = sigma_params,
    .act_range = sigma_range,
};

const qlp_plugin *QLENS_PLUGIN_ENTRY(void) { return &sigma_plugin; }
