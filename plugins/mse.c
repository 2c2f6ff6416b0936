/* mse: the clipping range minimising the quantization mean squared error,
 * clipping included.
 *
 * Activations, from the histogram: values are taken as spread evenly over
 * each bin, and a candidate grid is charged the exact expected squared error
 * of that density (evaluating bin centres instead aliases, giving false
 * minima where the step is a near-multiple of the bin width).
 *  - symmetric formats, or data on one side of zero: candidates t are the
 *    upper bin edges of |x| (merged to at most 2048 bins); range [-t, t],
 *    [0, t] or [-t, 0];
 *  - asymmetric formats with data on both sides: a coarse grid of pairs
 *    lo = min * a/64, hi = max * b/64 with a, b in 16..64 (2401 pairs), on
 *    the signed histogram merged to at most 1024 bins.
 * The first candidate of least error wins (the narrowest t; the first pair
 * in (a, b) order).
 *
 * Speed (a few ms at most per tensor: the UI re-encodes layers from saved
 * statistics interactively). With levels at multiples of the step s and the
 * outermost cells reaching to infinity (clipped values go to the edge level),
 * the error splits into
 *  - the two edge cells: sum (x - c)^2 over the cell, from prefix sums of
 *    the counts and their first and second moments, O(1);
 *  - the cells between, over the span [p0, p1): with u = x/s and the
 *    sawtooth integral H(u) = u/12 + q(u - round(u)) + 1/24, q(v) = v^3/3 -
 *    v/12, the error of bin density d_j over its part of the span is
 *    s^3 (H(b/s) - H(a/s)); summed over bins that is s^2/12 times the mass in
 *    the span (O(1)) plus s^3 sum_e (d_{e-1} - d_e) q(e/s) over the bin edges
 *    e inside the span (q vanishes at p0 and p1, which lie half a step from
 *    a level).
 * Since |q| <= 1/(36 sqrt 3), the first two parts bound every candidate's
 * error within s^3 |q|max sum_e |d_{e-1} - d_e| in O(1); only candidates
 * whose lower bound does not exceed the best error found so far get the
 * O(edges) sum. The objective is the one summed bin by bin, reorganised:
 * results differ from that only by rounding.
 *
 * Weights, exactly on the values, per channel: t = absmax * (1 - i/100),
 * i = 0..80 (asymmetric: both ends scaled by that factor), minimising
 * sum (w - fakequant(w))^2. Ties keep the wider range. */
#include <math.h>
#include <stdlib.h>

#include "hist_util.h"
#include "qlens-plugin.h"

#define MSE_MAX_BINS 2048
#define MSE_ASYM_BINS 1024
#define MSE_QMAX 0.01603750747748 /* max |q(v)| on [-1/2, 1/2] = 1/(36 sqrt 3), rounded up */
/* Counts are scaled down (rounded) beyond this total, so that the integer
 * moment sums below stay exact in 64 bits: 2^40 * 3 * (1.01 * 2048)^2 < 2^64.
 * That perturbs each bin by less than 2^-40 of the total. */
#define MSE_MAX_COUNT ((uint64_t)1 << 40)
/* One cell costs about this many sawtooth edges (measured). */
#define MSE_CELL_COST 12

/* A histogram in bin units: n bins [j, j+1) with counts a_j. */
typedef struct mse_hist {
    int n;
    double *a;            /* counts as doubles */
    uint64_t *m0, *m1, *m2; /* [n+1] prefix sums (mod 2^64) of a_j, a_j (2j+1),
                           * a_j (3j^2+3j+1): 1, 2 and 3 times the moments */
    int ne;               /* edges e in [0, n] where the count changes */
    int *eidx;            /* [n+1] those edges */
    double *edlt;         /* [n+1] a_{e-1} - a_e there (a_{-1} = a_n = 0) */
    int *epos;            /* [n+2] number of such edges below e */
    double *eabs;         /* [n+2] sum of |edlt| over the first k edges */
} mse_hist;

/* A grid in bin units: level m at m s - o for m in [mlo, mhi]. */
typedef struct mse_grid {
    double s, o, mlo, mhi;
} mse_grid;

static void mse_hist_free(mse_hist *h)
{
    free(h->a);
    free(h->m0);
    free(h->m1);
    free(h->m2);
    free(h->eidx);
    free(h->edlt);
    free(h->epos);
    free(h->eabs);
}

/* Builds the prefix sums of counts c[0..n); returns 0 or -1 on OOM. */
static int mse_hist_init(mse_hist *h, const uint64_t *c, int n)
{
    *h = (mse_hist){.n = n};
    h->a = malloc((size_t)n * sizeof *h->a);
    h->m0 = malloc((size_t)(n + 1) * sizeof *h->m0);
    h->m1 = malloc((size_t)(n + 1) * sizeof *h->m1);
    h->m2 = malloc((size_t)(n + 1) * sizeof *h->m2);
    h->eidx = malloc((size_t)(n + 1) * sizeof *h->eidx);
    h->edlt = malloc((size_t)(n + 1) * sizeof *h->edlt);
    h->epos = malloc((size_t)(n + 2) * sizeof *h->epos);
    h->eabs = malloc((size_t)(n + 2) * sizeof *h->eabs);
    if (!h->a || !h->m0 || !h->m1 || !h->m2 || !h->eidx || !h->edlt || !h->epos || !h->eabs) {
        mse_hist_free(h);
        return -1;
    }
    uint64_t total = 0;
    for (int j = 0; j < n; j++)
        total += c[j];
    int shift = 0;
    while ((total >> shift) > MSE_MAX_COUNT)
        shift++;
    uint64_t s0 = 0, s1 = 0, s2 = 0;
    for (int j = 0; j < n; j++) {
        uint64_t v = shift ? (c[j] >> shift) + ((c[j] >> (shift - 1)) & 1) : c[j];
        uint64_t k = (uint64_t)j;
        h->m0[j] = s0;
        h->m1[j] = s1;
        h->m2[j] = s2;
        s0 += v;
        s1 += v * (2 * k + 1);
        s2 += v * (3 * k * k + 3 * k + 1);
        h->a[j] = (double)v;
    }
    h->m0[n] = s0;
    h->m1[n] = s1;
    h->m2[n] = s2;
    double sabs = 0;
    for (int e = 0; e <= n; e++) {
        double d = (e > 0 ? h->a[e - 1] : 0) - (e < n ? h->a[e] : 0);
        h->epos[e] = h->ne;
        if (d != 0) {
            h->eabs[h->ne] = sabs;
            h->eidx[h->ne] = e;
            h->edlt[h->ne++] = d;
            sabs += fabs(d);
        }
    }
    h->epos[n + 1] = h->ne;
    h->eabs[h->ne] = sabs;
    return 0;
}

/* An integer held modulo 2^64 whose true value lies in (-2^63, 2^63). */
static double mse_signed(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX ? (double)v : -(double)(0 - v);
}

/* sum of (x - c)^2 over the values in [xa, xb). Moments are taken about the
 * integer J = floor(c), in exact integer arithmetic for whole bins (wrapping
 * is harmless: the true results fit), so nothing large cancels. */
static double mse_cell(const mse_hist *h, double xa, double xb, double c)
{
    xa = fmax(xa, 0);
    xb = fmin(xb, h->n);
    if (!(xb > xa))
        return 0;
    int ja = (int)xa, jb = (int)xb;
    ja = ja < h->n ? ja : h->n - 1;
    jb = jb < h->n ? jb : h->n - 1;
    double fa = xa - ja, fb = xb - jb, jd = floor(c), dl = c - jd;
    uint64_t uj = (uint64_t)(int64_t)jd;
    uint64_t i0 = h->m0[jb] - h->m0[ja], d1 = h->m1[jb] - h->m1[ja], d2 = h->m2[jb] - h->m2[ja];
    uint64_t i1 = d1 - 2 * uj * i0, i2 = d2 - 3 * uj * d1 + 3 * uj * uj * i0;
    double da = ja - jd, db = jb - jd, ca = h->a[ja] * fa, cb = h->a[jb] * fb;
    double s0 = (double)i0 + cb - ca;
    double s1 = (mse_signed(i1) + cb * (2 * db + fb) - ca * (2 * da + fa)) / 2;
    double s2 = ((double)i2 + cb * (3 * db * db + 3 * db * fb + fb * fb) -
                 ca * (3 * da * da + 3 * da * fa + fa * fa)) / 3;
    return s2 - 2 * dl * s1 + dl * dl * s0;
}

/* Count of values in [xa, xb). */
static double mse_mass(const mse_hist *h, double xa, double xb)
{
    xa = fmax(xa, 0);
    xb = fmin(xb, h->n);
    if (!(xb > xa))
        return 0;
    int ja = (int)xa, jb = (int)xb;
    ja = ja < h->n ? ja : h->n - 1;
    jb = jb < h->n ? jb : h->n - 1;
    return (double)(h->m0[jb] - h->m0[ja]) + h->a[jb] * (xb - jb) - h->a[ja] * (xa - ja);
}

/* The edges strictly inside the span [p0, p1), as positions in eidx. */
static void mse_span_edges(const mse_hist *h, double p0, double p1, int *k0, int *k1)
{
    double e0 = fmax(floor(p0) + 1, 0), e1 = fmin(ceil(p1) - 1, h->n);
    if (e0 > e1) {
        *k0 = *k1 = 0;
        return;
    }
    *k0 = h->epos[(int)e0];
    *k1 = h->epos[(int)e1 + 1];
}

/* The error of g without the sawtooth term (*bound: how far that term can
 * reach either way). */
static double mse_main(const mse_hist *h, const mse_grid *g, double *bound)
{
    double s = g->s, p0 = (g->mlo + 0.5) * s - g->o, p1 = (g->mhi - 0.5) * s - g->o;
    double e = mse_cell(h, 0, p0, g->mlo * s - g->o) + mse_cell(h, p1, h->n, g->mhi * s - g->o) +
               s * s / 12 * mse_mass(h, p0, p1);
    int k0, k1;
    mse_span_edges(h, p0, p1, &k0, &k1);
    *bound = s * s * s * MSE_QMAX * (h->eabs[k1] - h->eabs[k0]);
    return e;
}

/* base plus the sawtooth term s^3 sum_e (a_{e-1} - a_e) q((e + o)/s) over
 * the span; INFINITY as soon as the sum so far and the bound of the rest
 * show that the total exceeds cap. */
static double mse_saw(const mse_hist *h, const mse_grid *g, double base, double cap)
{
    double s = g->s, s3 = s * s * s, inv = 1 / s, o = g->o, acc = 0;
    const double big = 6755399441055744.0; /* 1.5 * 2^52: rounds to an integer, |y| < 2^51 */
    int k0, k1;
    mse_span_edges(h, (g->mlo + 0.5) * s - o, (g->mhi - 0.5) * s - o, &k0, &k1);
    for (int k = k0; k < k1;) {
        int end = k1 - k > 64 ? k + 64 : k1;
        double part[2] = {0, 0};
        for (; k < end; k++) {
            double y = (h->eidx[k] + o) * inv, v = y - ((y + big) - big);
            part[k & 1] += h->edlt[k] * v * (v * v * (1.0 / 3) - 1.0 / 12);
        }
        acc += part[0] + part[1];
        if (base + s3 * (acc - MSE_QMAX * (1 + 1e-9) * (h->eabs[k1] - h->eabs[k])) > cap)
            return INFINITY;
    }
    return base + s3 * acc;
}

/* The error of g given base = mse_main(g) (or INFINITY if it exceeds cap):
 * cell by cell when the levels over the data cost less than the edges in
 * the span (coarse grids, such as 4 bits), else base plus the sawtooth
 * term. Both are the same sum. */
static double mse_exact(const mse_hist *h, const mse_grid *g, double base, double cap)
{
    double s = g->s, o = g->o;
    /* the levels nearest to either end of the data */
    double m0 = fmin(fmax(g->mlo, floor(o / s + 0.5)), g->mhi);
    double m1 = fmax(fmin(g->mhi, floor((h->n + o) / s + 0.5)), g->mlo);
    int k0, k1;
    mse_span_edges(h, (g->mlo + 0.5) * s - o, (g->mhi - 0.5) * s - o, &k0, &k1);
    if ((m1 - m0 + 1) * MSE_CELL_COST >= k1 - k0)
        return mse_saw(h, g, base, cap);
    double e = 0;
    for (double m = m0; m <= m1; m++) {
        double xa = m == g->mlo ? 0 : (m - 0.5) * s - o;
        double xb = m == g->mhi ? h->n : (m + 0.5) * s - o;
        e += mse_cell(h, xa, xb, m * s - o);
    }
    return e;
}

/* Index of the first grid of least error among g[0..n). Each candidate's
 * bounds come in O(1); the exact sum is taken only where the lower bound
 * does not exceed the best error found so far, starting from the candidate
 * of least upper bound. Returns -1 on OOM. */
static int mse_search(const mse_hist *h, const mse_grid *g, int n)
{
    if (n < 1)
        return -1;
    double *lb = malloc((size_t)n * sizeof *lb), *base = malloc((size_t)n * sizeof *base);
    int best = -1;
    if (!lb || !base)
        goto done;
    double ub = INFINITY;
    for (int c = 0; c < n; c++) {
        double b;
        base[c] = mse_main(h, &g[c], &b);
        /* slack for the rounding of the sum against its bound */
        lb[c] = base[c] - b * (1 + 1e-9);
        if (c == 0 || base[c] + b < ub) {
            ub = base[c] + b;
            best = c;
        }
    }
    double be = mse_exact(h, &g[best], base[best], INFINITY);
    for (int c = 0; c < n; c++) {
        if (c == best || lb[c] > be)
            continue;
        double e = mse_exact(h, &g[c], base[c], be);
        if (e < be || (e == be && c < best)) {
            be = e;
            best = c;
        }
    }
done:
    free(lb);
    free(base);
    return best;
}

/* Symmetric or one-sided: t over the upper edges of the |x| bins. */
static qlp_result mse_abs(const qlp_hist *h, const qlp_format *fmt, double mn, double mx,
                          double *lo, double *hi, char *err, size_t errlen)
{
    qlp_result r = QLP_OK;
    mse_hist mh = {0};
    mse_grid *g = NULL;
    int nb = 0;
    double w = 0;
    uint64_t *u = hu_fold_abs(h, MSE_MAX_BINS, &nb, &w);
    if (u && nb == 0) { /* every value is 0 */
        *lo = *hi = 0;
        goto done;
    }
    if (!u || mse_hist_init(&mh, u, nb) != 0 || !(g = malloc((size_t)nb * sizeof *g))) {
        r = hu_fail(err, errlen, "out of memory");
        goto done;
    }
    /* The grid of [0, t]: symmetric formats use their positive side; a
     * one-sided asymmetric range uses every level. |x| >= 0, so the lower
     * clip never applies. */
    double qmin, qmax;
    hu_qrange(fmt, &qmin, &qmax);
    double levels = fmt->symmetric ? qmax - (fmt->is_signed ? 0 : ldexp(1.0, fmt->bits - 1))
                                   : qmax - qmin;
    for (int k = 0; k < nb; k++)
        g[k] = (mse_grid){(k + 1) / levels, 0, -levels, levels};
    int best = mse_search(&mh, g, nb);
    if (best < 0) {
        r = hu_fail(err, errlen, "out of memory");
        goto done;
    }
    double t = fmin((best + 1) * w, fmax(fabs(mn), fabs(mx)));
    *lo = mn >= 0 ? 0.0 : fmax(mn, -t);
    *hi = mx <= 0 ? 0.0 : fmin(mx, t);
done:
    free(u);
    free(g);
    mse_hist_free(&mh);
    return r;
}

/* Asymmetric with both signs: coarse grid of (lo, hi) pairs. */
static qlp_result mse_pairs(const qlp_hist *h, const qlp_format *fmt, double mn, double mx,
                            double *lo, double *hi, char *err, size_t errlen)
{
    enum { A0 = 16, A1 = 64, NA = A1 - A0 + 1 };
    qlp_result r = QLP_OK;
    mse_hist mh = {0};
    mse_grid *g = NULL;
    int first = 0, last = h->nbins - 1;
    while (first < last && h->counts[first] == 0)
        first++;
    while (last > first && h->counts[last] == 0)
        last--;
    int used = last - first + 1, f = (used + MSE_ASYM_BINS - 1) / MSE_ASYM_BINS;
    int n = (used + f - 1) / f;
    double w = (h->hi - h->lo) / h->nbins, bw = w * f, x0 = h->lo + first * w;
    uint64_t *a = calloc((size_t)n, sizeof *a);
    if (!a)
        goto oom;
    for (int j = first; j <= last; j++)
        a[(j - first) / f] += h->counts[j];
    if (mse_hist_init(&mh, a, n) != 0 || !(g = malloc(NA * NA * sizeof *g)))
        goto oom;
    for (int ia = A0; ia <= A1; ia++) {
        for (int ib = A0; ib <= A1; ib++) {
            hu_grid q = hu_grid_make(fmt, mn * ia / 64, mx * ib / 64);
            g[(ia - A0) * NA + ib - A0] =
                (mse_grid){q.s / bw, x0 / bw, q.qmin - q.zp, q.qmax - q.zp};
        }
    }
    int best = mse_search(&mh, g, NA * NA);
    if (best < 0)
        goto oom;
    *lo = mn * (A0 + best / NA) / 64;
    *hi = mx * (A0 + best % NA) / 64;
    goto done;
oom:
    r = hu_fail(err, errlen, "out of memory");
done:
    free(a);
    free(g);
    mse_hist_free(&mh);
    return r;
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
