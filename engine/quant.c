/* Quantization primitives. Numerics, stated once so every path agrees:
 *   q = clamp(rint(x / scale) + zp, qmin, qmax)
 * with x / scale an IEEE float32 division (not x * (1/scale), which differs
 * in the last bit for some scales and would move ties), rint in the default
 * round-to-nearest-even mode (the engine never changes it), and the zero
 * point added after rounding (adding it first could create ties that rint
 * then breaks differently). ONNX QuantizeLinear and ONNX Runtime's MLAS
 * kernels compute the same. Dequantization is scale * (float)(q - zp), and
 * fake quantization returns exactly dequantize(quantize(x)). */
#include "quant.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ql_qspec_range(const ql_qspec *s, int64_t *qmin, int64_t *qmax)
{
    int64_t half = (int64_t)1 << (s->bits - 1);
    if (!s->is_signed) {
        *qmin = 0;
        *qmax = 2 * half - 1;
    } else if (s->symmetric) {
        *qmin = -(half - 1);
        *qmax = half - 1;
    } else {
        *qmin = -half;
        *qmax = half - 1;
    }
}

const char *ql_qspec_check(const ql_qspec *s)
{
    if (s->bits == 32) {
        if (!s->is_signed || !s->symmetric)
            return "32-bit quantizers must be signed and symmetric";
        return NULL;
    }
    if (s->bits < 2 || s->bits > 16)
        return "bits must be from 2 to 16, or 32";
    return NULL;
}

/* The zero point a symmetric spec fixes (and the default of others). */
static int32_t fixed_zero_point(const ql_qspec *s)
{
    if (s->symmetric && !s->is_signed)
        return (int32_t)1 << (s->bits - 1);
    return 0;
}

ql_status ql_encoding_init(ql_encoding *e, const ql_qspec *spec, int64_t n, ql_error *err)
{
    memset(e, 0, sizeof *e);
    const char *why = ql_qspec_check(spec);
    if (why)
        return ql_fail(err, QL_ERR_ARG, "%s (got %d bits, %s, %s)", why, spec->bits,
                       spec->is_signed ? "signed" : "unsigned",
                       spec->symmetric ? "symmetric" : "asymmetric");
    if (n < 1 || (spec->axis < 0 && n != 1))
        return ql_fail(err, QL_ERR_ARG, "an encoding needs 1 channel per tensor or >= 1 per axis"
                       " (got %lld channels, axis %d)", (long long)n, spec->axis);
    e->spec = *spec;
    if (e->spec.axis < 0)
        e->spec.axis = -1;
    e->n = n;
    e->scale = malloc((size_t)n * sizeof *e->scale);
    e->zero_point = malloc((size_t)n * sizeof *e->zero_point);
    e->lo = malloc((size_t)n * sizeof *e->lo);
    e->hi = malloc((size_t)n * sizeof *e->hi);
    if (!e->scale || !e->zero_point || !e->lo || !e->hi) {
        ql_encoding_clear(e);
        return ql_fail(err, QL_ERR_NOMEM, "out of memory for an encoding of %lld channels",
                       (long long)n);
    }
    /* Scale 1 at the natural zero point: a valid encoding covering the
     * integer grid itself until set_range replaces it. */
    int64_t qmin, qmax;
    ql_qspec_range(&e->spec, &qmin, &qmax);
    int32_t zp = fixed_zero_point(&e->spec);
    for (int64_t c = 0; c < n; c++) {
        e->scale[c] = 1.0f;
        e->zero_point[c] = zp;
        e->lo[c] = (float)(qmin - zp);
        e->hi[c] = (float)(qmax - zp);
    }
    return QL_OK;
}

void ql_encoding_clear(ql_encoding *e)
{
    free(e->scale);
    free(e->zero_point);
    free(e->lo);
    free(e->hi);
    memset(e, 0, sizeof *e);
}

ql_status ql_encoding_copy(ql_encoding *dst, const ql_encoding *src, ql_error *err)
{
    ql_status st = ql_encoding_init(dst, &src->spec, src->n, err);
    if (st != QL_OK)
        return st;
    size_t n = (size_t)src->n;
    memcpy(dst->scale, src->scale, n * sizeof *dst->scale);
    memcpy(dst->zero_point, src->zero_point, n * sizeof *dst->zero_point);
    memcpy(dst->lo, src->lo, n * sizeof *dst->lo);
    memcpy(dst->hi, src->hi, n * sizeof *dst->hi);
    return QL_OK;
}

/* Bitwise on the floats: "equal" means the same quantized model. */
bool ql_encoding_equal(const ql_encoding *a, const ql_encoding *b)
{
    if (a->spec.bits != b->spec.bits || a->spec.is_signed != b->spec.is_signed ||
        a->spec.symmetric != b->spec.symmetric || a->spec.axis != b->spec.axis || a->n != b->n)
        return false;
    size_t n = (size_t)a->n;
    return !n || (!memcmp(a->scale, b->scale, n * sizeof *a->scale) &&
                  !memcmp(a->zero_point, b->zero_point, n * sizeof *a->zero_point) &&
                  !memcmp(a->lo, b->lo, n * sizeof *a->lo) &&
                  !memcmp(a->hi, b->hi, n * sizeof *a->hi));
}

/* Infinite or NaN bounds cannot make a usable scale: NaN counts as 0 and
 * +-Inf as +-FLT_MAX. */
static double finite_bound(double v)
{
    if (isnan(v))
        return 0.0;
    return fmin(fmax(v, -(double)FLT_MAX), (double)FLT_MAX);
}

void ql_encoding_set_range(ql_encoding *e, int64_t c, double lo, double hi)
{
    assert(c >= 0 && c < e->n);
    lo = fmin(finite_bound(lo), 0.0);
    hi = fmax(finite_bound(hi), 0.0);
    int64_t qmin, qmax;
    ql_qspec_range(&e->spec, &qmin, &qmax);
    float scale;
    int32_t zp = fixed_zero_point(&e->spec);
    if (e->spec.symmetric) {
        double amax = fmax(-lo, hi);
        scale = (float)(amax / (double)(qmax - zp));
    } else {
        scale = (float)((hi - lo) / (double)(qmax - qmin));
    }
    if (!(scale >= QL_SCALE_MIN))
        scale = QL_SCALE_MIN;
    if (!e->spec.symmetric) {
        /* From the stored float scale so that lo maps to qmin as closely as
         * the float scale allows; clamped because rounding may step out. */
        double z = (double)qmin - nearbyint(lo / (double)scale);
        zp = (int32_t)fmin(fmax(z, (double)qmin), (double)qmax);
    }
    e->scale[c] = scale;
    e->zero_point[c] = zp;
    e->lo[c] = (float)lo;
    e->hi[c] = (float)hi;
}

int32_t ql_quantize1(float x, float scale, int32_t zp, int64_t qmin, int64_t qmax)
{
    float r = rintf(x / scale);
    if (isnan(r))
        return zp;
    /* In double: exact for every int32 bound and any float r. */
    double v = (double)r + (double)zp;
    if (v < (double)qmin)
        v = (double)qmin;
    if (v > (double)qmax)
        v = (double)qmax;
    return (int32_t)v;
}

/* ---------------------------------------------------------------------------
 * Fake quantization kernels. For grids within +-2^22 of the zero point
 * (every spec up to 16 bits) the clamp comes first, against the integer
 * bounds qmin - zp and qmax - zp, and rounding is the add-and-subtract of
 * 1.5 * 2^23, which is rint for |v| <= 2^22 in round-to-nearest-even. Clamping
 * before rounding is the same as after because the bounds are integers and
 * rounding is monotonic. Written this way the loop is plain SSE2/NEON
 * arithmetic (div, compare-select, add, sub, mul) that the vectoriser takes
 * without SSE4.1 rounding instructions. NaN fails both comparisons and
 * stays NaN; x - x = +0 makes -0 come out as +0, as dequantize gives.
 * ------------------------------------------------------------------------- */
#define QL_ROUND_MAGIC 12582912.0f /* 1.5 * 2^23 */
#define QL_FAST_BOUND 4194304      /* 2^22 */

static void fq_run(float *restrict x, int64_t n, float s, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] / s;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        v = (v + QL_ROUND_MAGIC) - QL_ROUND_MAGIC;
        x[i] = s * v;
    }
}

/* The innermost axis is the channel axis: parameters vary per element. */
static void fq_rows(float *restrict x, int64_t n, const float *restrict s,
                    const float *restrict lo, const float *restrict hi)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] / s[i];
        v = v < lo[i] ? lo[i] : v;
        v = v > hi[i] ? hi[i] : v;
        v = (v + QL_ROUND_MAGIC) - QL_ROUND_MAGIC;
        x[i] = s[i] * v;
    }
}

/* Any grid (32-bit bias grids): exact through quantize1 and dequantize1. */
static void fq_slow(float *x, int64_t n, float s, int32_t zp, int64_t qmin, int64_t qmax)
{
    for (int64_t i = 0; i < n; i++) {
        if (isnan(x[i]))
            continue;
        int32_t q = ql_quantize1(x[i], s, zp, qmin, qmax);
        x[i] = s * (float)((int64_t)q - zp);
    }
}

const char *ql_encoding_check_shape(const ql_encoding *e, int ndim, const int64_t *dims,
                                    const char **field, char *buf, size_t n)
{
    int ax = e->spec.axis;
    *field = "scale";
    if (ax < 0) {
        if (e->n == 1)
            return NULL;
        snprintf(buf, n, "a per-tensor encoding (axis -1) has exactly one value, not %lld",
                 (long long)e->n);
        return buf;
    }
    if (ndim < 0) /* rank unknown */
        return NULL;
    if (ax >= ndim) {
        *field = "axis";
        if (ndim == 0)
            snprintf(buf, n, "no axis %d in a scalar", ax);
        else
            snprintf(buf, n, "no axis %d in a tensor of rank %d (axes 0 to %d)", ax, ndim,
                     ndim - 1);
        return buf;
    }
    if (dims[ax] >= 0 && dims[ax] != e->n) {
        snprintf(buf, n, "expected %lld values (one per channel along axis %d), got %lld",
                 (long long)dims[ax], ax, (long long)e->n);
        return buf;
    }
    return NULL;
}

/* Splits t around the channel axis: outer x channels x inner. */
static ql_status channel_layout(const ql_tensor *t, const ql_encoding *e, int64_t *outer,
                                int64_t *inner, ql_error *err)
{
    if (t->dtype != QL_F32)
        return ql_fail(err, QL_ERR_ARG, "quantize: tensor is not f32");
    for (int64_t c = 0; c < e->n; c++)
        if (!(e->scale[c] > 0.0f) || !isfinite(e->scale[c]))
            return ql_fail(err, QL_ERR_ARG, "quantize: scale[%lld] = %g is not positive and"
                           " finite", (long long)c, (double)e->scale[c]);
    int64_t numel = ql_tensor_numel(t);
    if (e->spec.axis < 0) {
        if (e->n != 1)
            return ql_fail(err, QL_ERR_ARG, "quantize: per-tensor encoding with %lld scales",
                           (long long)e->n);
        *outer = 1;
        *inner = numel;
        return QL_OK;
    }
    int ax = e->spec.axis;
    const char *field;
    char why[160];
    if (ql_encoding_check_shape(e, t->ndim, t->dims, &field, why, sizeof why))
        return ql_fail(err, QL_ERR_SHAPE, "quantize: %s", why);
    *outer = ql_numel(ax, t->dims);
    *inner = ql_numel(t->ndim - ax - 1, t->dims + ax + 1);
    return QL_OK;
}

static bool fast_grid(int64_t qmin, int64_t qmax, int32_t zp)
{
    return qmin - zp >= -QL_FAST_BOUND && qmax - zp <= QL_FAST_BOUND;
}

ql_status ql_fake_quant(ql_tensor *t, const ql_encoding *e, ql_error *err)
{
    int64_t outer, inner, C = e->n;
    ql_status st = channel_layout(t, e, &outer, &inner, err);
    if (st != QL_OK)
        return st;
    int64_t qmin, qmax;
    ql_qspec_range(&e->spec, &qmin, &qmax);
    float *x = t->data;
    bool fast = true;
    for (int64_t c = 0; c < C; c++)
        fast = fast && fast_grid(qmin, qmax, e->zero_point[c]);
    if (!fast) {
        for (int64_t o = 0; o < outer; o++)
            for (int64_t c = 0; c < C; c++)
                fq_slow(x + (o * C + c) * inner, inner, e->scale[c], e->zero_point[c], qmin,
                        qmax);
        return QL_OK;
    }
    float small[128]; /* the per-tensor hot path allocates nothing */
    float *lo = C <= 64 ? small : malloc((size_t)C * 2 * sizeof *lo);
    if (!lo)
        return ql_fail(err, QL_ERR_NOMEM, "quantize: out of memory");
    float *hi = lo + C;
    for (int64_t c = 0; c < C; c++) {
        lo[c] = (float)(qmin - e->zero_point[c]);
        hi[c] = (float)(qmax - e->zero_point[c]);
    }
    if (inner == 1 && C > 1) {
        for (int64_t o = 0; o < outer; o++)
            fq_rows(x + o * C, C, e->scale, lo, hi);
    } else {
        for (int64_t o = 0; o < outer; o++)
            for (int64_t c = 0; c < C; c++)
                fq_run(x + (o * C + c) * inner, inner, e->scale[c], lo[c], hi[c]);
    }
    if (lo != small)
        free(lo);
    return QL_OK;
}

ql_status ql_quantize(const ql_tensor *t, const ql_encoding *e, int32_t *q, ql_error *err)
{
    int64_t outer, inner, C = e->n;
    ql_status st = channel_layout(t, e, &outer, &inner, err);
    if (st != QL_OK)
        return st;
    int64_t qmin, qmax;
    ql_qspec_range(&e->spec, &qmin, &qmax);
    const float *x = t->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < C; c++) {
            int64_t base = (o * C + c) * inner;
            float s = e->scale[c];
            int32_t zp = e->zero_point[c];
            for (int64_t i = 0; i < inner; i++)
                q[base + i] = ql_quantize1(x[base + i], s, zp, qmin, qmax);
        }
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * Requantization
 * ------------------------------------------------------------------------- */

ql_requant ql_requant_from_real(double m)
{
    ql_requant r = {0, 0};
    if (!(m > 0.0))
        return r;
    if (!isfinite(m))
        return (ql_requant){INT32_MAX, 0};
    int e;
    double f = frexp(m, &e); /* m = f * 2^e, f in [0.5, 1) */
    int64_t mult = (int64_t)nearbyint(ldexp(f, 31));
    if (mult == (int64_t)1 << 31) { /* f rounded up to 1 */
        mult >>= 1;
        e++;
    }
    r.mult = (int32_t)mult;
    r.shift = 31 - e;
    return r;
}

/* round(x * mult * 2^-shift), half away from zero, saturated. The product
 * |x| * mult needs up to 94 bits: it is kept as hi * 2^32 + lo words so the
 * code needs no 128-bit integer type. */
int32_t ql_requant_apply(int64_t x, ql_requant r)
{
    if (x == 0 || r.mult <= 0)
        return 0;
    bool neg = x < 0;
    if (r.shift < 0) /* |x| * mult >= 2^30, times 2 or more */
        return neg ? INT32_MIN : INT32_MAX;
    uint64_t ax = neg ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
    uint64_t m = (uint64_t)r.mult;
    /* p = ax * m as p1 * 2^32 + p0 with p0 < 2^32 */
    uint64_t lo = (ax & 0xffffffffu) * m, hi = (ax >> 32) * m;
    uint64_t p0 = lo & 0xffffffffu;
    uint64_t p1 = hi + (lo >> 32); /* < 2^63: fits */
    int sh = r.shift;
    uint64_t res; /* floor((p + 2^(sh-1)) / 2^sh), saturating at 2^32 */
    const uint64_t cap = (uint64_t)1 << 32;
    if (sh == 0) {
        res = p1 ? cap : p0;
    } else if (sh <= 32) {
        uint64_t low = p0 + ((uint64_t)1 << (sh - 1)); /* < 2^33 */
        uint64_t top = p1 + (low >> 32);               /* carry into the high word */
        low &= 0xffffffffu;
        /* result = top * 2^(32-sh) + low >> sh */
        if (top >= ((uint64_t)1 << sh))
            res = cap;
        else
            res = (top << (32 - sh)) | (low >> sh);
    } else if (sh < 96) {
        /* The rounding bit lies in the high word; p0 cannot reach it. */
        uint64_t top = p1 + ((uint64_t)1 << (sh - 33));
        res = top >> (sh - 32);
    } else {
        res = 0; /* p < 2^95 <= 2^(sh-1) */
    }
    if (neg)
        return res >= (uint64_t)1 << 31 ? INT32_MIN : -(int32_t)res;
    return res > (uint64_t)INT32_MAX ? INT32_MAX : (int32_t)res;
}
