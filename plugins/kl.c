/* kl: entropy calibration as TensorRT describes it (Migacz, "8-bit Inference
 * with TensorRT", GTC 2017). On the histogram of |x| (merged to at most 2048
 * bins), each candidate i keeps the first i bins as P, with everything beyond
 * added to bin i-1; Q quantizes the same first i bins (without the outliers)
 * into `levels` groups, each group's mass spread evenly over its non-empty
 * bins; the threshold minimises KL(P || Q). Terms with P = 0 count 0; a
 * candidate where P > 0 but Q = 0 (outliers piled on an empty last bin) has
 * infinite divergence and is never chosen.
 *
 * The bin holding zero is given its neighbour's count first, as NVIDIA's own
 * implementation (pytorch-quantization) does: after a ReLU most values are
 * exactly zero, and that one spike would otherwise dominate both
 * distributions and drive the threshold towards zero.
 *
 * KL is evaluated in O(levels) per candidate from prefix sums: inside group
 * g, Q is constant, so sum P log Q = (mass of g) * log(G_g / n_g). */
#include <math.h>
#include <stdlib.h>

#include "hist_util.h"
#include "qlens-plugin.h"

#define KL_MAX_BINS 2048

static qlp_result kl_act(const qlp_params *p, const qlp_hist *h, const qlp_format *fmt,
                         double *lo, double *hi, char *err, size_t errlen)
{
    qlp_result r = QLP_OK;
    uint64_t *a = NULL;
    double *S = NULL, *CL = NULL;
    int *NZ = NULL;
    if (hu_check(h, err, errlen) != QLP_OK)
        return QLP_ERROR;
    if (fmt->bits < 2 || fmt->bits > 30)
        return hu_fail(err, errlen, "unsupported bit width %d", fmt->bits);
    double mn, mx;
    hu_extremes(h, &mn, &mx);
    double absmax = fmax(fabs(mn), fabs(mx)), t = absmax;
    int nb = 0;
    double w = 0;
    a = hu_fold_abs(h, KL_MAX_BINS, &nb, &w);
    if (!a)
        return hu_fail(err, errlen, "out of memory");
    if (nb > 1)
        a[0] = a[1];
    int levels = fmt->is_signed ? 1 << (fmt->bits - 1) : 1 << fmt->bits;
    if (nb == 0 || levels >= nb)
        goto done; /* every populated bin gets its own level: no clipping */

    S = malloc((size_t)(nb + 1) * sizeof *S);
    CL = malloc((size_t)(nb + 1) * sizeof *CL);
    NZ = malloc((size_t)(nb + 1) * sizeof *NZ);
    if (!S || !CL || !NZ) {
        r = hu_fail(err, errlen, "out of memory");
        goto done;
    }
    S[0] = CL[0] = 0;
    NZ[0] = 0;
    for (int j = 0; j < nb; j++) {
        double c = (double)a[j];
        S[j + 1] = S[j] + c;
        CL[j + 1] = CL[j] + (c > 0 ? c * log(c) : 0.0);
        NZ[j + 1] = NZ[j] + (a[j] != 0);
    }
    double N = S[nb], best = INFINITY;
    int best_i = nb;
    for (int i = levels; i <= nb; i++) {
        double out = N - S[i], last = (double)a[i - 1];
        if (out > 0 && last == 0)
            continue;
        double pl = last + out;
        double plogp = CL[i - 1] + (pl > 0 ? pl * log(pl) : 0.0), plogq = 0;
        for (int g = 0; g < levels; g++) {
            int s = (int)((int64_t)g * i / levels), e = (int)((int64_t)(g + 1) * i / levels);
            int n = NZ[e] - NZ[s];
            if (n == 0)
                continue;
            double G = S[e] - S[s];
            plogq += (g == levels - 1 ? G + out : G) * log(G / n);
        }
        double kl = (plogp - plogq) / N - log(N) + log(S[i]);
        if (kl < best) {
            best = kl;
            best_i = i;
        }
    }
    t = fmin(best_i * w, absmax);

done:
    if (r == QLP_OK) {
        *lo = mn >= 0 ? 0.0 : fmax(mn, -t);
        *hi = mx <= 0 ? 0.0 : fmin(mx, t);
    }
    free(a);
    free(S);
    free(CL);
    free(NZ);
    return r;
}

static const qlp_plugin kl_plugin = {
    .abi_version = QLP_ABI_VERSION,
    .name = "kl",
    .summary = "entropy calibration: the clip of |x| minimising KL divergence (TensorRT)",
    .kinds = QLP_KIND_ACTIVATION,
    .n_params = 0,
    .params = NULL,
    .act_range = kl_act,
};

const qlp_plugin *QLENS_PLUGIN_ENTRY(void)
{
    return &kl_plugin;
}
