/* kl: entropy calibration as TensorRT describes it (Migacz, "8-bit Inference
 * with TensorRT", GTC 2017): each candidate threshold T keeps the histogram
 * up to T as P, with everything beyond added to the edge bin; Q quantizes
 * the same bins (without the outliers) into `levels` groups, each group's
 * mass spread evenly over its non-empty bins; T minimises KL(P || Q).
 * Terms with P = 0 count 0; a candidate where P > 0 but Q = 0 (outliers
 * piled on an empty edge bin) has infinite divergence and is never chosen.
 *
 * The histogram is taken on both sides of zero, not folded into |x|: the
 * two sides (each at most 2048 bins, candidates from `levels` bins upward,
 * `levels` groups a side for signed formats) are clipped at the same +-T
 * and P and Q are the two sides joined, as MXNet and ONNX Runtime implement
 * the method. Folding would let a spike on one side (the background of a
 * normalised image, all at one negative value) pose as mass of the other,
 * and KL would clip the positive side at the spike. For a tensor that is
 * never negative the two are the same.
 *
 * The bin holding zero is given its outer neighbour's count first, as
 * NVIDIA's own implementation (pytorch-quantization) does: after a ReLU
 * most values are exactly zero, and that one spike would otherwise dominate
 * both distributions and drive the threshold towards zero.
 *
 * Candidates that would cut off more than `max_clip` of the values
 * (default 1 %) are not considered: T minimises KL among those that keep at
 * least 99 %. The method assumes that what it clips is a thin tail of
 * outliers, and on most tensors it clips far less (0.001-0.1 %). Where a
 * tensor has spikes in the bulk (the first ReLU of an image model: each
 * channel's output over a uniform background is one value), spreading each
 * spike's mass over its level's bins costs about its mass * log(bins per
 * level) whatever T is; that cost grows with T and can outweigh clipping
 * whole modes of the data (on the shipped example: 9 % of the values, top-1
 * 0.883 against 0.937 in float). max_clip = 1 gives the unconstrained
 * choice.
 *
 * KL is evaluated in O(levels) per candidate from prefix sums: inside group
 * g, Q is constant, so sum P log Q = (mass of g) * log(G_g / n_g). */
#include <math.h>
#include <stdlib.h>

#include "hist_util.h"
#include "qlens-plugin.h"

#define KL_MAX_BINS 2048

static const qlp_param_def kl_params[] = {
    {"max_clip", QLP_PARAM_FLOAT, 0.01, 0, 1,
     "largest fraction of the values the threshold may cut off"},
};

/* Prefix sums of one side: S (counts), CL (c log c), NZ (non-empty bins). */
typedef struct side {
    const uint64_t *a;
    double *S, *CL;
    int *NZ;
} side;

static int side_init(side *sd, const uint64_t *a, int nb)
{
    sd->a = a;
    sd->S = malloc((size_t)(nb + 1) * sizeof *sd->S);
    sd->CL = malloc((size_t)(nb + 1) * sizeof *sd->CL);
    sd->NZ = malloc((size_t)(nb + 1) * sizeof *sd->NZ);
    if (!sd->S || !sd->CL || !sd->NZ)
        return -1;
    sd->S[0] = sd->CL[0] = 0;
    sd->NZ[0] = 0;
    for (int j = 0; j < nb; j++) {
        double c = (double)a[j];
        sd->S[j + 1] = sd->S[j] + c;
        sd->CL[j + 1] = sd->CL[j] + (c > 0 ? c * log(c) : 0.0);
        sd->NZ[j + 1] = sd->NZ[j] + (a[j] != 0);
    }
    return 0;
}

static void side_free(side *sd)
{
    free(sd->S);
    free(sd->CL);
    free(sd->NZ);
}

/* Adds this side's sum P log P - sum P log Q (unnormalised counts) for the
 * candidate of i bins; returns -1 when the divergence is infinite. */
static int side_terms(const side *sd, int nb, int i, int levels, double *plogp, double *plogq)
{
    double out = sd->S[nb] - sd->S[i], last = (double)sd->a[i - 1];
    if (out > 0 && last == 0)
        return -1;
    double pl = last + out;
    *plogp += sd->CL[i - 1] + (pl > 0 ? pl * log(pl) : 0.0);
    for (int g = 0; g < levels; g++) {
        int s = (int)((int64_t)g * i / levels), e = (int)((int64_t)(g + 1) * i / levels);
        int n = sd->NZ[e] - sd->NZ[s];
        if (n == 0)
            continue;
        double G = sd->S[e] - sd->S[s];
        *plogq += (g == levels - 1 ? G + out : G) * log(G / n);
    }
    return 0;
}

static qlp_result kl_act(const qlp_params *p, const qlp_hist *h, const qlp_format *fmt,
                         double *lo, double *hi, char *err, size_t errlen)
{
    qlp_result r = QLP_OK;
    uint64_t *pos = NULL, *neg = NULL;
    side sd[2] = {{0}};
    double max_clip = p && p->n >= 1 ? p->v[0] : kl_params[0].dflt;
    if (!(max_clip >= 0 && max_clip <= 1))
        return hu_fail(err, errlen, "max_clip = %g is outside [0, 1]", max_clip);
    if (hu_check(h, err, errlen) != QLP_OK)
        return QLP_ERROR;
    if (fmt->bits < 2 || fmt->bits > 30)
        return hu_fail(err, errlen, "unsupported bit width %d", fmt->bits);
    double mn, mx;
    hu_extremes(h, &mn, &mx);
    double absmax = fmax(fabs(mn), fabs(mx)), t = absmax;
    int nb = 0;
    double w = 0;
    pos = hu_split_signed(h, KL_MAX_BINS, &neg, &nb, &w);
    if (!pos)
        return hu_fail(err, errlen, "out of memory");
    double total = 0; /* every value, zeros included */
    for (int j = 0; j < nb; j++)
        total += (double)pos[j] + (double)neg[j];
    if (nb > 1)
        pos[0] = pos[1]; /* the bin holding zero */
    /* a side's levels: half the grid when the format must cover both signs */
    int both = fmt->is_signed || mn < 0;
    int levels = both ? 1 << (fmt->bits - 1) : 1 << fmt->bits;
    if (nb == 0 || levels >= nb)
        goto done; /* every populated bin gets its own level: no clipping */

    int ns = 0;
    const uint64_t *arr[2] = {pos, neg};
    for (int k = 0; k < 2; k++) {
        uint64_t any = 0;
        for (int j = 0; j < nb && !any; j++)
            any = arr[k][j];
        if (!any)
            continue;
        if (side_init(&sd[ns++], arr[k], nb) != 0) {
            r = hu_fail(err, errlen, "out of memory");
            goto done;
        }
    }
    double N = 0;
    for (int k = 0; k < ns; k++)
        N += sd[k].S[nb];
    double best = INFINITY;
    int best_i = nb;
    for (int i = levels; i <= nb; i++) {
        double plogp = 0, plogq = 0, inside = 0, clipped = 0;
        for (int k = 0; k < ns; k++)
            clipped += sd[k].S[nb] - sd[k].S[i];
        if (clipped > max_clip * total)
            continue;
        int inf = 0;
        for (int k = 0; k < ns && !inf; k++) {
            inf = side_terms(&sd[k], nb, i, levels, &plogp, &plogq) != 0;
            inside += sd[k].S[i];
        }
        if (inf)
            continue;
        double kl = (plogp - plogq) / N - log(N) + log(inside);
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
    for (int k = 0; k < 2; k++)
        side_free(&sd[k]);
    free(pos);
    free(neg);
    return r;
}

static const qlp_plugin kl_plugin = {
    .abi_version = QLP_ABI_VERSION,
    .name = "kl",
    .summary = "entropy calibration: the clip +-T minimising KL divergence (TensorRT)",
    .kinds = QLP_KIND_ACTIVATION,
    .n_params = 1,
    .params = kl_params,
    .act_range = kl_act,
};

const qlp_plugin *QLENS_PLUGIN_ENTRY(void)
{
    return &kl_plugin;
}
