/* Streaming calibration statistics: exact re-binning histograms and sets of
 * them (their file is calib_stats_file.c). Bin edges are k * R / 4096 with R a power of two, so a value's
 * bin is floor(x * 2^e) + 4096 with an exact product, and doubling R maps
 * every old bin into exactly one new bin. */
#include "calib_stats.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define HALF (QL_HIST_BINS / 2)
#define LOG2_HALF 12 /* 2^12 = HALF */

/* ---------------------------------------------------------------------------
 * Histogram
 * ------------------------------------------------------------------------- */

ql_status ql_hist_init(ql_hist *h, ql_error *err)
{
    memset(h, 0, sizeof *h);
    h->min = INFINITY;
    h->max = -INFINITY;
    h->counts = calloc(QL_HIST_BINS, sizeof *h->counts);
    if (!h->counts)
        return ql_fail(err, QL_ERR_NOMEM, "histogram: out of memory");
    return QL_OK;
}

void ql_hist_clear(ql_hist *h)
{
    free(h->pend);
    free(h->counts);
    memset(h, 0, sizeof *h);
}

void ql_hist_reset(ql_hist *h, double range)
{
    ql_hist_settle(h);
    memset(h->counts, 0, QL_HIST_BINS * sizeof *h->counts);
    h->min = INFINITY;
    h->max = -INFINITY;
    h->count = h->nan = h->ninf = h->pinf = h->at_range = 0;
    h->range = range;
}

/* 1 / bin width (0 while R is 0, which puts zeros in the centre bin). */
static double hist_inv_width(double range)
{
    return range > 0 ? HALF / range : 0.0;
}

/* floor(v) + HALF clamped to the bins; v = x / width is exact (power-of-two
 * scaling of a float in double), and the truncate-then-fix floor avoids
 * the rounding that v + HALF could do for tiny negative v. */
static inline int hist_index(double v)
{
    int i = (int)v;
    i -= v < (double)i;
    i += HALF;
    return i < 0 ? 0 : i >= QL_HIST_BINS ? QL_HIST_BINS - 1 : i;
}

int ql_hist_bin(const ql_hist *h, double x)
{
    if (isinf(x))
        return x < 0 ? 0 : QL_HIST_BINS - 1;
    double v = x * hist_inv_width(h->range);
    if (v >= HALF)
        return QL_HIST_BINS - 1;
    if (v < -HALF)
        return 0;
    return hist_index(v);
}

/* Re-bins counts (in place) from range R to R * 2^k: old bin j goes to
 * floor((j - HALF) / 2^k) + HALF. Infinite values stay in the edge bins;
 * values equal to the old R (in the top bin) go to the bin of R. */
static void hist_rebin(uint64_t *counts, uint64_t ninf, uint64_t pinf, uint64_t at_range, int k)
{
    if (k <= 0)
        return;
    if (k > LOG2_HALF + 1)
        k = LOG2_HALF + 1; /* beyond that everything is in the two centre bins */
    counts[0] -= ninf;
    counts[QL_HIST_BINS - 1] -= pinf + at_range;
    uint64_t *tmp = counts; /* new index <= old index above the centre, >= below */
    for (int j = HALF; j < QL_HIST_BINS; j++) {
        int nj = ((j - HALF) >> k) + HALF;
        uint64_t c = tmp[j];
        tmp[j] = 0;
        tmp[nj] += c;
    }
    for (int j = HALF - 1; j >= 0; j--) {
        int d = HALF - j; /* j - HALF = -d, floor(-d / 2^k) = -ceil(d / 2^k) */
        int nj = HALF - ((d + (1 << k) - 1) >> k);
        uint64_t c = tmp[j];
        tmp[j] = 0;
        tmp[nj] += c;
    }
    counts[0] += ninf;
    counts[QL_HIST_BINS - 1] += pinf;
    counts[(HALF >> k) + HALF] += at_range;
}

/* Smallest power of two >= a (a > 0, finite). */
static double pow2_ceil(double a)
{
    int e;
    double m = frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    return m == 0.5 ? ldexp(1.0, e - 1) : ldexp(1.0, e);
}

/* Makes R cover a (finite, > R). */
static void hist_grow(ql_hist *h, double a)
{
    if (h->range == 0) {
        h->range = pow2_ceil(a); /* only zeros and infinities so far: nothing moves */
        return;
    }
    int k = 0;
    double r = h->range;
    while (r < a) {
        r *= 2;
        k++;
    }
    hist_rebin(h->counts, h->ninf, h->pinf, h->at_range, k);
    h->at_range = 0;
    h->range = r;
}

/* The general path: any values, NaN and infinities included, range grown
 * as values arrive. */
static void hist_add_general(ql_hist *h, const float *x, int64_t n)
{
    uint64_t *counts = h->counts;
    float mn = (float)h->min, mx = (float)h->max;
    float rf = (float)h->range; /* +Inf only if R = 2^128: no finite float exceeds it */
    double inv = hist_inv_width(h->range);
    uint64_t nan = 0, top = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (v != v) {
            nan++;
            continue;
        }
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        float a = fabsf(v);
        if (a > rf) {
            if (isinf(v)) {
                if (v < 0) {
                    h->ninf++;
                    counts[0]++;
                } else {
                    h->pinf++;
                    counts[QL_HIST_BINS - 1]++;
                }
                continue;
            }
            h->at_range += top;
            top = 0;
            hist_grow(h, a);
            rf = (float)h->range;
            inv = hist_inv_width(h->range);
        }
        counts[hist_index(v * inv)]++;
        top += v == rf && rf > 0; /* R itself is in the top bin, for now (R = 0: zeros are centred) */
    }
    h->min = mn;
    h->max = mx;
    h->count += (uint64_t)n - nan;
    h->nan += nan;
    h->at_range += top;
}

/* Values per block: 16 KiB, which with the AVX2 pass's list of bins (16
 * KiB) is small enough that a block whose binning has to be undone (see
 * hist_add_block) is still in L1 for the second pass, and large enough
 * that the per-block work is a small part. */
#define BLOCK 4096

typedef float v4 __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef float v4u __attribute__((vector_size(16), aligned(4), may_alias));

/* a < b ? a : b and a > b ? a : b per lane (so b where a is NaN): one
 * instruction each with SSE, which every x86-64 has. */
static inline v4 vmin(v4 a, v4 b)
{
#ifdef __SSE__
    return __builtin_ia32_minps(a, b);
#else
    v4i l = a < b;
    return (v4)(((v4i)a & l) | ((v4i)b & ~l));
#endif
}

static inline v4 vmax(v4 a, v4 b)
{
#ifdef __SSE__
    return __builtin_ia32_maxps(a, b);
#else
    v4i g = a > b;
    return (v4)(((v4i)a & g) | ((v4i)b & ~g));
#endif
}

/* Whether all four lanes of a comparison are true. */
static inline bool all4(v4i m)
{
#ifdef __SSE__
    return __builtin_ia32_movmskps((v4)m) == 15;
#else
    return (m[0] & m[1] & m[2] & m[3]) != 0;
#endif
}

/* The largest float below HALF (2^-12 is the float spacing below 2^12).
 * Clamping x * inv to [-HALF, TOP] puts x = R in the top bin (floor(TOP) =
 * HALF - 1) and moves no other value of [-R, R]; anything else (NaN, values
 * beyond R) lands in an edge bin. */
#define TOP ((float)HALF - 0x1p-12f)

/* floor(clamp(x * inv)) + HALF, in float. The product is exact unless it
 * underflows, and then |x * inv| < 1: a negative x whose product rounded
 * to -0 belongs in bin HALF - 1 (floor of a tiny negative is -1), which
 * the truncate-then-fix floor alone would miss. */
static inline int bin_of(float x, float inv)
{
    float v = x * inv;
    v = v > -HALF ? v : -HALF; /* also NaN */
    v = v < TOP ? v : TOP;
    int i = (int)v;
    i -= v < (float)i || (x < 0 && v == 0);
    return i + HALF;
}

/* The counters of one ql_hist_add call, flushed into the histogram's u64
 * counts at the end. Two sets, the even lanes of each vector counting in
 * one and the odd lanes in the other: runs of one bin (the zeros after a
 * ReLU, a constant background) then alternate between two addresses and
 * stall less on mispredicted store-to-load dependencies (measured: 1.2 ns
 * per increment into one array, 0.7 into two). And 64 KiB on the stack stay
 * in cache where a histogram's counts, one 64 KiB array per tensor, are cold
 * at every batch (measured: an eighth less histogram time in the pass).
 * u32 counters, flushed long before they could wrap; the flush covers only
 * the bins in use. Past the bins, slots the AVX2 pass
 * may increment to pad its list of bins to pairs; never read. */
#define DUMP QL_HIST_BINS
#define SCRATCH_LEN (QL_HIST_BINS + 8)
typedef struct bin_scratch {
    uint32_t *even, *odd; /* SCRATCH_LEN each */
    int lo, hi;      /* bins in use since the last flush; none while lo > hi */
    int64_t pending; /* values counted since the last flush */
    bool wide;       /* bin 8 lanes at a time (AVX2) */
} bin_scratch;

#define SCRATCH_MAX_PENDING ((int64_t)1 << 31)

static void scratch_flush(bin_scratch *s, uint64_t *counts)
{
    for (int j = s->lo; j <= s->hi; j++) {
        counts[j] += (uint64_t)s->even[j] + s->odd[j];
        s->even[j] = s->odd[j] = 0;
    }
    s->lo = QL_HIST_BINS;
    s->hi = -1;
    s->pending = 0;
}

typedef struct block_ext {
    float mn, mx;
    bool odd; /* a NaN or an infinity */
} block_ext;

/* The scalar end of a block pass: values i..n-1, the zeros skipped in
 * groups, and the verdict on NaN and infinities from the sum of v - v. */
static block_ext block_finish(block_ext e, float sum, uint32_t *counts, const float *x,
                              int64_t i, int64_t n, float inv, uint32_t d, uint32_t zeros)
{
    for (; i < n; i++) {
        float v = x[i];
        e.mn = v < e.mn ? v : e.mn;
        e.mx = v > e.mx ? v : e.mx;
        sum += v - v;
        counts[bin_of(v, inv)] += d;
    }
    counts[HALF] += zeros * d;
    e.odd = sum != sum;
    return e;
}

/* One pass over a block: adds d (1, or -1 to undo, or 0) to the bin of
 * every value at the range whose 1 / width is inv, and finds the extremes
 * and whether a value is NaN or infinite (v - v is NaN then, 0 otherwise).
 * The bins are right only for finite values within R, which the caller
 * checks afterwards; any other value lands in an edge bin, in bounds.
 * Vectors of zeros (after a ReLU: a fifth of the groups of four in the
 * example model, a seventh of the groups of eight) skip the binning: zero
 * is in bin HALF at every range. */
static inline block_ext bin_block(uint32_t *even, uint32_t *odd, const float *x, int64_t n,
                                  float inv, bool tiny, uint32_t d)
{
    const v4 vinv = {inv, inv, inv, inv}, zero = {0, 0, 0, 0};
    const v4 lo = {-HALF, -HALF, -HALF, -HALF}, hi = {TOP, TOP, TOP, TOP};
    const v4i half = {HALF, HALF, HALF, HALF};
    v4 mn = {INFINITY, INFINITY, INFINITY, INFINITY}, mx = -mn, acc = zero;
    uint32_t zeros = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4 xv = *(const v4u *)(x + i);
        mn = vmin(xv, mn);
        mx = vmax(xv, mx);
        acc += xv - xv;
        if (all4(xv == zero)) {
            zeros += 4;
            continue;
        }
        v4 t = vmin(vmax(xv * vinv, lo), hi);
        v4i b = __builtin_convertvector(t, v4i);
        /* true is -1: step down where truncation went up, or (only
         * possible when inv < 1) where a negative product underflowed */
        v4i down = __builtin_convertvector(b, v4) > t;
        if (tiny)
            down |= (xv < zero) & (t == zero);
        b += down + half;
        even[b[0]] += d;
        odd[b[1]] += d;
        even[b[2]] += d;
        odd[b[3]] += d;
    }
    block_ext e = {INFINITY, -INFINITY, false};
    float sum = 0;
    for (int k = 0; k < 4; k++) {
        e.mn = mn[k] < e.mn ? mn[k] : e.mn;
        e.mx = mx[k] > e.mx ? mx[k] : e.mx;
        sum += acc[k];
    }
    return block_finish(e, sum, even, x, i, n, inv, d, zeros);
}

#if defined(__x86_64__) || defined(__i386__)
#define HAVE_BIN_BLOCK8 1
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));

typedef uint32_t v8u32u __attribute__((vector_size(32), aligned(4), may_alias));

/* pack_lut[k]: the lanes whose bits are set in k, in order, then zeros
 * (a left-pack by one permutation) */
static uint32_t pack_lut[256][8] __attribute__((aligned(32)));
static pthread_once_t pack_lut_once = PTHREAD_ONCE_INIT;

static void pack_lut_init(void)
{
    for (int k = 0; k < 256; k++) {
        int j = 0;
        for (int l = 0; l < 8; l++)
            if (k >> l & 1)
                pack_lut[k][j++] = (uint32_t)l;
        while (j < 8)
            pack_lut[k][j++] = 0;
    }
}

/* bin_block 8 lanes at a time, for CPUs with AVX2 (chosen at run time;
 * same counts): a fifth less time per value than SSE in the statistics
 * pass, where the vector work outweighs the scatter. */
__attribute__((target("avx2"))) static block_ext bin_block8(uint32_t *even, uint32_t *odd,
                                                              const float *x, int64_t n,
                                                              float inv, bool tiny, uint32_t d)
{
    const v8 zero = {0, 0, 0, 0, 0, 0, 0, 0}, vinv = zero + inv;
    const v8 lo = zero - HALF, hi = zero + TOP;
    const v8i half = (v8i){0, 0, 0, 0, 0, 0, 0, 0} + HALF;
    v8 mn = zero + INFINITY, mx = -mn, acc = zero;
    uint32_t zeros = 0;
    uint32_t idx[BLOCK + 8] __attribute__((aligned(32))); /* the bins, in order */
    int64_t i = 0, m = 0;
    for (; i + 8 <= n; i += 8) {
        v8 xv = *(const v8u *)(x + i);
        mn = __builtin_ia32_minps256(xv, mn);
        mx = __builtin_ia32_maxps256(xv, mx);
        acc += xv - xv;
        v8i zl = xv == zero;
        int zm = __builtin_ia32_movmskps256((v8)zl);
        /* zeros are counted here and left out of the increments: after a
         * ReLU they are a third of the values, and all in one bin, whose
         * increments would wait on each other. No branch for vectors of
         * zeros only: they come and go with the image, and a mispredicted
         * branch cost more than binning them for nothing (the packing
         * below then keeps none of the lanes) */
        zeros += (uint32_t)__builtin_popcount((unsigned)zm);
        v8 t = __builtin_ia32_minps256(__builtin_ia32_maxps256(xv * vinv, lo), hi);
        /* floor (mode 9: toward -inf, no exceptions), exact in float */
        v8i b = __builtin_convertvector(__builtin_ia32_roundps256(t, 9), v8i) + half;
        if (tiny) /* as in bin_block */
            b += (xv < zero) & (t == zero);
        /* the non-zero lanes' bins, packed to the front */
        unsigned keep = (unsigned)zm ^ 255u;
        v8i sel = *(const v8i *)pack_lut[keep];
        *(v8u32u *)(idx + m) = (v8u32)__builtin_ia32_permvarsi256(b, sel);
        m += __builtin_popcount(keep);
    }
    if (m % 2)
        idx[m++] = DUMP; /* pairs below; never read */
    /* the increments, from memory: taking lanes out of a vector one by one
     * between increments was slower, and zeros left out need no increment
     * (on a ReLU-like synthetic block, a third zeros: best 0.87 ns a value
     * that way, 0.69 this way) */
    for (int64_t k = 0; k < m; k += 2) {
        even[idx[k]] += d;
        odd[idx[k + 1]] += d;
    }
    block_ext e = {INFINITY, -INFINITY, false};
    float sum = 0;
    for (int k = 0; k < 8; k++) {
        e.mn = mn[k] < e.mn ? mn[k] : e.mn;
        e.mx = mx[k] > e.mx ? mx[k] : e.mx;
        sum += acc[k];
    }
    return block_finish(e, sum, even, x, i, n, inv, d, zeros);
}
#endif

static block_ext bin_block_at(const ql_hist *h, bin_scratch *s, const float *x, int64_t n,
                              uint32_t d)
{
    float inv = (float)hist_inv_width(h->range);
#ifdef HAVE_BIN_BLOCK8
    if (s->wide)
        return bin_block8(s->even, s->odd, x, n, inv, inv < 1, d);
#endif
    if (inv < 1)
        return bin_block(s->even, s->odd, x, n, inv, true, d);
    return bin_block(s->even, s->odd, x, n, inv, false, d);
}

/* Adds a block of at most BLOCK values in one pass, binned at the current
 * range on the bet that it still covers them (after the first batches it
 * almost always does). When the extremes say otherwise (growth, NaN or
 * infinities), the pass is undone exactly and the block redone: the range
 * grown once for the block, or the general path. Same counts either way. */
static void hist_add_block(ql_hist *h, bin_scratch *s, const float *x, int64_t n)
{
    block_ext e;
    /* with a range so small that 1 / width is not exact in float, only the
     * extremes are taken (d = 0), then the general path */
    bool exact = hist_inv_width(h->range) <= 0x1p100;
    e = bin_block_at(h, s, x, n, exact ? 1 : 0);
    double a = fmax(fabs((double)e.mn), fabs((double)e.mx));
    if (e.odd || a > h->range || !exact) {
        if (exact)
            bin_block_at(h, s, x, n, (uint32_t)-1);
        if (e.odd || (a > 0 && hist_inv_width(a > h->range ? 2 * a : h->range) > 0x1p100)) {
            scratch_flush(s, h->counts); /* the general path may re-bin the counts */
            hist_add_general(h, x, n);
            return;
        }
        if (a > h->range) {
            scratch_flush(s, h->counts);
            hist_grow(h, a); /* moves the values at the old edge (at_range) too */
        }
        bin_block_at(h, s, x, n, 1);
    }
    float inv = (float)hist_inv_width(h->range), rf = (float)h->range;
    int lo = bin_of(e.mn, inv), hi = bin_of(e.mx, inv); /* bins are monotone in x */
    s->lo = lo < s->lo ? lo : s->lo;
    s->hi = hi > s->hi ? hi : s->hi;
    s->pending += n;
    if (e.mx == rf && rf > 0) /* values at R itself sit in the top bin, for now */
        for (int64_t i = 0; i < n; i++)
            h->at_range += x[i] == rf;
    if (e.mn < h->min)
        h->min = e.mn;
    if (e.mx > h->max)
        h->max = e.mx;
    h->count += (uint64_t)n;
    if (s->pending > SCRATCH_MAX_PENDING)
        scratch_flush(s, h->counts);
}

static bool hist_portable;

void ql_hist_set_portable(bool on)
{
    hist_portable = on;
}

/* The counters, one set per thread: zero when a thread starts, and zero
 * again after every call (the flushes clear the bins they empty), so that
 * the many small calls of a statistics pass run a sample at a time do not
 * each clear 64 KiB. */
static __thread uint32_t tls_counters[2][SCRATCH_LEN];

void ql_hist_add(ql_hist *h, const float *x, int64_t n)
{
    bin_scratch scratch, *s = &scratch;
    if (h->pend) { /* deferred: the histogram's own counters, flushed later */
        s->even = h->pend;
        s->odd = h->pend + SCRATCH_LEN;
        s->lo = h->pend_lo;
        s->hi = h->pend_hi;
        s->pending = h->pend_n;
    } else {
        s->even = tls_counters[0];
        s->odd = tls_counters[1];
        s->lo = QL_HIST_BINS;
        s->hi = -1;
        s->pending = 0;
    }
#ifdef HAVE_BIN_BLOCK8
    s->wide = !hist_portable && __builtin_cpu_supports("avx2");
    if (s->wide)
        pthread_once(&pack_lut_once, pack_lut_init);
#else
    s->wide = false;
#endif
    for (int64_t at = 0; at < n; at += BLOCK)
        hist_add_block(h, s, x + at, n - at < BLOCK ? n - at : BLOCK);
    if (h->pend) {
        h->pend_lo = s->lo;
        h->pend_hi = s->hi;
        h->pend_n = s->pending;
    } else {
        scratch_flush(s, h->counts);
    }
}

ql_status ql_hist_defer(ql_hist *h, ql_error *err)
{
    if (h->pend)
        return QL_OK;
    h->pend = calloc(2 * SCRATCH_LEN, sizeof *h->pend);
    if (!h->pend)
        return ql_fail(err, QL_ERR_NOMEM, "histogram: out of memory");
    h->pend_lo = QL_HIST_BINS;
    h->pend_hi = -1;
    h->pend_n = 0;
    return QL_OK;
}

void ql_hist_settle(ql_hist *h)
{
    if (!h->pend)
        return;
    bin_scratch s = {.even = h->pend, .odd = h->pend + SCRATCH_LEN, .lo = h->pend_lo,
                     .hi = h->pend_hi};
    scratch_flush(&s, h->counts);
    free(h->pend);
    h->pend = NULL;
}

ql_status ql_hist_merge(ql_hist *dst, ql_hist *src, ql_error *err)
{
    ql_hist_settle(dst);
    ql_hist_settle(src);
    const uint64_t *sc = src->counts;
    uint64_t *tmp = NULL;
    if (src->range > dst->range) {
        if (dst->range == 0)
            dst->range = src->range;
        else
            hist_grow(dst, src->range);
    } else if (src->range < dst->range && src->range > 0) {
        tmp = malloc(QL_HIST_BINS * sizeof *tmp);
        if (!tmp)
            return ql_fail(err, QL_ERR_NOMEM, "histogram merge: out of memory");
        memcpy(tmp, src->counts, QL_HIST_BINS * sizeof *tmp);
        int k = 0;
        for (double r = src->range; r < dst->range; r *= 2)
            k++;
        hist_rebin(tmp, src->ninf, src->pinf, src->at_range, k);
        sc = tmp;
    }
    for (int j = 0; j < QL_HIST_BINS; j++)
        dst->counts[j] += sc[j];
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->nan += src->nan;
    dst->ninf += src->ninf;
    dst->pinf += src->pinf;
    if (src->range == dst->range)
        dst->at_range += src->at_range; /* else re-binned inward above */
    free(tmp);
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Sets of named tensors
 * ------------------------------------------------------------------------- */

ql_calib_stats *ql_calib_stats_new(void)
{
    return calloc(1, sizeof(ql_calib_stats));
}

void ql_calib_stats_free(ql_calib_stats *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++) {
        free(s->names[i]);
        ql_hist_clear(&s->hists[i]);
    }
    free(s->names);
    free(s->hists);
    free(s);
}

int ql_calib_stats_find(const ql_calib_stats *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0)
            return i;
    return -1;
}

int ql_calib_stats_add(ql_calib_stats *s, const char *name)
{
    int i = ql_calib_stats_find(s, name); /* names are keys: never twice */
    if (i >= 0)
        return i;
    char **names = realloc(s->names, (size_t)(s->n + 1) * sizeof *names);
    if (!names)
        return -1;
    s->names = names;
    ql_hist *hists = realloc(s->hists, (size_t)(s->n + 1) * sizeof *hists);
    if (!hists)
        return -1;
    s->hists = hists;
    char *copy = strdup(name);
    if (!copy)
        return -1;
    if (ql_hist_init(&s->hists[s->n], NULL) != QL_OK) {
        free(copy);
        return -1;
    }
    s->names[s->n] = copy;
    return s->n++;
}
