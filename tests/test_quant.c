/* Unit tests: quantizer specs, encodings, quantize/fake-quant numerics
 * (round half to even, saturation, NaN/Inf, negative zero, per-channel
 * along every axis) and fixed-point requantization. References are written
 * here from the definitions; float results are compared bit for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "engine/quant.h"
#include "tests/testutil.h"

static bool same_bits(float a, float b) { return !memcmp(&a, &b, sizeof a); }

/* Reference quantizer, from the definition: float division, rint in
 * round-to-nearest-even, zero point added after rounding, clamp. */
static int64_t ref_q(float x, float s, int64_t zp, int64_t qmin, int64_t qmax)
{
    float v = x / s;
    if (isnan(v))
        return zp;
    double r = nearbyint((double)v) + (double)zp;
    return r < (double)qmin ? qmin : r > (double)qmax ? qmax : (int64_t)r;
}

static float ref_fq(float x, float s, int64_t zp, int64_t qmin, int64_t qmax)
{
    if (isnan(x))
        return x;
    return s * (float)(ref_q(x, s, zp, qmin, qmax) - zp);
}

static void test_ranges(void **state)
{
    (void)state;
    struct {
        int bits;
        bool sg, sym;
        int64_t lo, hi;
    } cases[] = {
        {8, true, true, -127, 127},     {8, true, false, -128, 127},
        {8, false, false, 0, 255},      {8, false, true, 0, 255},
        {4, true, true, -7, 7},         {4, true, false, -8, 7},
        {4, false, false, 0, 15},       {16, true, true, -32767, 32767},
        {16, true, false, -32768, 32767}, {16, false, false, 0, 65535},
        {2, true, true, -1, 1},         {32, true, true, -2147483647, 2147483647},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ql_qspec s = {cases[i].bits, cases[i].sg, cases[i].sym, -1};
        int64_t lo, hi;
        ql_qspec_range(&s, &lo, &hi);
        assert_int_equal(lo, cases[i].lo);
        assert_int_equal(hi, cases[i].hi);
        assert_null(ql_qspec_check(&s));
    }
    ql_qspec bad[] = {{1, true, true, -1}, {17, true, true, -1}, {32, false, true, -1},
                      {32, true, false, -1}, {0, true, true, -1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_non_null(ql_qspec_check(&bad[i]));
}

static void test_encoding_init_copy_equal(void **state)
{
    (void)state;
    ql_error err;
    ql_encoding a, b;
    ql_qspec s = {8, false, true, 1};
    assert_int_equal(ql_encoding_init(&a, &s, 3, &err), QL_OK);
    for (int c = 0; c < 3; c++) {
        assert_true(a.scale[c] == 1.0f);
        assert_int_equal(a.zero_point[c], 128);
    }
    ql_encoding_set_range(&a, 1, -2.0, 5.0);
    assert_int_equal(ql_encoding_copy(&b, &a, &err), QL_OK);
    assert_true(ql_encoding_equal(&a, &b));
    b.hi[2] = 7.0f;
    assert_false(ql_encoding_equal(&a, &b));
    b.hi[2] = a.hi[2];
    b.spec.axis = 0;
    assert_false(ql_encoding_equal(&a, &b));
    ql_encoding_clear(&a);
    ql_encoding_clear(&b);
    assert_null(b.scale);

    ql_qspec pt = {8, true, true, -3};
    assert_int_equal(ql_encoding_init(&a, &pt, 2, &err), QL_ERR_ARG);
    assert_int_equal(ql_encoding_init(&a, &pt, 1, &err), QL_OK);
    assert_int_equal(a.spec.axis, -1); /* per-tensor normalised */
    ql_encoding_clear(&a);
    ql_qspec b1 = {1, true, true, -1};
    assert_int_equal(ql_encoding_init(&a, &b1, 1, &err), QL_ERR_ARG);
}

/* set_range against the formulas, computed here in double. */
static void test_set_range(void **state)
{
    (void)state;
    ql_error err;
    ql_encoding e;
    ql_qspec sym = {8, true, true, -1};
    assert_int_equal(ql_encoding_init(&e, &sym, 1, &err), QL_OK);
    ql_encoding_set_range(&e, 0, -1.0, 2.0);
    assert_true(same_bits(e.scale[0], (float)(2.0 / 127.0)));
    assert_int_equal(e.zero_point[0], 0);
    ql_encoding_set_range(&e, 0, 0.5, 3.0); /* widened to [0, 3] */
    assert_true(same_bits(e.scale[0], (float)(3.0 / 127.0)));
    assert_true(e.lo[0] == 0.0f && e.hi[0] == 3.0f);
    ql_encoding_set_range(&e, 0, -4.0, -1.0); /* widened to [-4, 0] */
    assert_true(same_bits(e.scale[0], (float)(4.0 / 127.0)));
    ql_encoding_set_range(&e, 0, 0.0, 0.0); /* zero width */
    assert_true(e.scale[0] == QL_SCALE_MIN);
    assert_int_equal(ql_quantize1(0.0f, e.scale[0], e.zero_point[0], -127, 127), 0);
    assert_int_equal(ql_quantize1(1.0f, e.scale[0], e.zero_point[0], -127, 127), 127);
    ql_encoding_set_range(&e, 0, -1e-45, 1e-45); /* underflows: floor */
    assert_true(e.scale[0] == QL_SCALE_MIN);
    ql_encoding_set_range(&e, 0, -INFINITY, NAN);
    assert_true(isfinite(e.scale[0]) && e.scale[0] > 0.0f);
    ql_encoding_clear(&e);

    /* asymmetric: scale = (hi-lo)/(qmax-qmin), zp = qmin - round(lo/scale) */
    struct {
        int bits;
        bool sg;
        double lo, hi;
    } ac[] = {{8, true, -1.0, 3.0},  {8, false, -1.0, 3.0}, {8, false, 0.5, 2.0},
              {4, true, -0.3, 0.1},  {16, true, -7.0, 1.0}, {8, true, -3.0, 0.0},
              {8, true, -0.1, 25.0}, {16, false, -2.5, 2.5}};
    for (size_t i = 0; i < sizeof ac / sizeof ac[0]; i++) {
        ql_qspec s = {ac[i].bits, ac[i].sg, false, -1};
        int64_t qmin, qmax;
        ql_qspec_range(&s, &qmin, &qmax);
        assert_int_equal(ql_encoding_init(&e, &s, 1, &err), QL_OK);
        ql_encoding_set_range(&e, 0, ac[i].lo, ac[i].hi);
        double lo = fmin(ac[i].lo, 0), hi = fmax(ac[i].hi, 0);
        float scale = (float)((hi - lo) / (double)(qmax - qmin));
        double zp = (double)qmin - nearbyint(lo / scale);
        zp = fmax(fmin(zp, (double)qmax), (double)qmin);
        assert_true(same_bits(e.scale[0], scale));
        assert_int_equal(e.zero_point[0], (int64_t)zp);
        /* 0 is exactly representable; lo and hi map near the grid ends */
        assert_true(ql_dequantize1(ql_quantize1(0.0f, e.scale[0], e.zero_point[0], qmin, qmax),
                                   e.scale[0], e.zero_point[0]) == 0.0f);
        int64_t qlo = ql_quantize1((float)lo, e.scale[0], e.zero_point[0], qmin, qmax);
        int64_t qhi = ql_quantize1((float)hi, e.scale[0], e.zero_point[0], qmin, qmax);
        assert_true(qlo - qmin <= 1 && qmax - qhi <= 1);
        ql_encoding_clear(&e);
    }
    /* Known values: int8 asym [-1, 3]: scale 4/255, -1/scale = -63.75 -> zp -64. */
    ql_qspec a8 = {8, true, false, -1};
    assert_int_equal(ql_encoding_init(&e, &a8, 1, &err), QL_OK);
    ql_encoding_set_range(&e, 0, -1.0, 3.0);
    assert_int_equal(e.zero_point[0], -64);
    ql_encoding_set_range(&e, 0, 0.0, 0.0);
    assert_true(e.scale[0] == QL_SCALE_MIN);
    assert_int_equal(e.zero_point[0], -128);
    ql_encoding_clear(&e);
    /* Unsigned symmetric: zp 2^(b-1), scale amax / (qmax - zp). */
    ql_qspec us = {8, false, true, -1};
    assert_int_equal(ql_encoding_init(&e, &us, 1, &err), QL_OK);
    ql_encoding_set_range(&e, 0, -1.0, 0.5);
    assert_int_equal(e.zero_point[0], 128);
    assert_true(same_bits(e.scale[0], (float)(1.0 / 127.0)));
    ql_encoding_clear(&e);
}

static void test_round_half_even(void **state)
{
    (void)state;
    const float x[] = {0.5f, 1.5f, 2.5f, 3.5f, -0.5f, -1.5f, -2.5f, -3.5f, 0.49999997f, 126.5f};
    const int32_t want[] = {0, 2, 2, 4, 0, -2, -2, -4, 0, 126};
    float buf[10];
    memcpy(buf, x, sizeof buf);
    int64_t dims[] = {10};
    ql_tensor *t = ql_tensor_wrap(QL_F32, 1, dims, buf);
    ql_encoding e;
    ql_qspec s = {8, true, true, -1};
    assert_int_equal(ql_encoding_init(&e, &s, 1, NULL), QL_OK); /* scale 1, zp 0 */
    int32_t q[10];
    assert_int_equal(ql_quantize(t, &e, q, NULL), QL_OK);
    assert_int_equal(ql_fake_quant(t, &e, NULL), QL_OK);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ql_quantize1(x[i], 1.0f, 0, -127, 127), want[i]);
        assert_int_equal(q[i], want[i]);
        assert_true(same_bits(buf[i], (float)want[i]));
    }
    /* The zero point is added after rounding: 0.5 + 3 is not a tie at 3.5. */
    assert_int_equal(ql_quantize1(0.5f, 1.0f, 3, -128, 127), 3);
    assert_int_equal(ql_quantize1(1.5f, 1.0f, 3, -128, 127), 5);
    /* A tie made by the division itself: 0.75 / 0.5 = 1.5 -> 2, 1.25 / 0.5 = 2.5 -> 2. */
    assert_int_equal(ql_quantize1(0.75f, 0.5f, 0, -127, 127), 2);
    assert_int_equal(ql_quantize1(1.25f, 0.5f, 0, -127, 127), 2);
    ql_encoding_clear(&e);
    ql_tensor_free(t);
}

static void test_saturation_nan_inf_negzero(void **state)
{
    (void)state;
    float buf[] = {100.0f, -100.0f, INFINITY, -INFINITY, NAN, -0.0f, -0.01f, 12.7f, 12.75f};
    const int32_t want_q[] = {127, -127, 127, -127, 0, 0, 0, 127, 127};
    int64_t dims[] = {9};
    ql_tensor *t = ql_tensor_wrap(QL_F32, 1, dims, buf);
    ql_encoding e;
    ql_qspec s = {8, true, true, -1};
    assert_int_equal(ql_encoding_init(&e, &s, 1, NULL), QL_OK);
    e.scale[0] = 0.1f;
    int32_t q[9];
    assert_int_equal(ql_quantize(t, &e, q, NULL), QL_OK);
    for (int i = 0; i < 9; i++)
        assert_int_equal(q[i], want_q[i]);
    assert_int_equal(ql_fake_quant(t, &e, NULL), QL_OK);
    assert_true(same_bits(buf[0], 0.1f * 127.0f));
    assert_true(same_bits(buf[1], 0.1f * -127.0f));
    assert_true(same_bits(buf[2], 0.1f * 127.0f));
    assert_true(same_bits(buf[3], 0.1f * -127.0f));
    assert_true(isnan(buf[4]));
    assert_true(same_bits(buf[5], 0.0f)); /* +0, as dequantize(quantize(-0)) */
    assert_true(same_bits(buf[6], 0.0f));
    /* NaN maps to the zero point when quantized (asymmetric too). */
    assert_int_equal(ql_quantize1(NAN, 0.1f, -7, -128, 127), -7);
    assert_int_equal(ql_quantize1(-INFINITY, 0.1f, -7, -128, 127), -128);
    assert_int_equal(ql_quantize1(-0.0f, 0.1f, 9, 0, 255), 9);
    ql_encoding_clear(&e);
    ql_tensor_free(t);
}

/* Per-tensor fake quant over random data, ties included, for every kind of
 * spec: bit-identical to the reference and to dequantize(quantize(x)). */
static void test_per_tensor_against_reference(void **state)
{
    (void)state;
    tu_rng rng = {7};
    int bits[] = {2, 4, 8, 16};
    const int64_t n = 4099; /* odd: exercises vector epilogues */
    int64_t dims[] = {n};
    for (int b = 0; b < 4; b++)
        for (int kind = 0; kind < 4; kind++) {
            ql_qspec s = {bits[b], kind != 2, kind < 2 ? kind == 0 : kind == 3, -1};
            ql_encoding e;
            assert_int_equal(ql_encoding_init(&e, &s, 1, NULL), QL_OK);
            ql_encoding_set_range(&e, 0, -3.0 + kind, 5.0 - kind * 0.7);
            int64_t qmin, qmax;
            ql_qspec_range(&s, &qmin, &qmax);
            ql_tensor *t = tu_rand(&rng, 1, dims, -8.0f, 8.0f);
            float *x = t->data;
            for (int64_t i = 0; i < n; i += 3) /* exact and near ties */
                x[i] = ((float)((int)(tu_next(&rng) % 41) - 20) + 0.5f) * e.scale[0];
            x[1] = NAN;
            x[4] = -0.0f;
            x[7] = INFINITY;
            x[10] = -INFINITY;
            ql_tensor *orig = ql_tensor_clone(t);
            int32_t *q = malloc((size_t)n * sizeof *q);
            assert_int_equal(ql_quantize(orig, &e, q, NULL), QL_OK);
            assert_int_equal(ql_fake_quant(t, &e, NULL), QL_OK);
            const float *x0 = orig->data, *y = t->data;
            for (int64_t i = 0; i < n; i++) {
                int64_t rq = ref_q(x0[i], e.scale[0], e.zero_point[0], qmin, qmax);
                assert_int_equal(q[i], rq);
                float rf = ref_fq(x0[i], e.scale[0], e.zero_point[0], qmin, qmax);
                if (!same_bits(y[i], rf) && !(isnan(y[i]) && isnan(rf)))
                    fail_msg("bits %d kind %d i %lld: x %.9g got %.9g want %.9g", bits[b], kind,
                             (long long)i, (double)x0[i], (double)y[i], (double)rf);
                if (!isnan(x0[i]))
                    assert_true(
                        same_bits(y[i], ql_dequantize1(q[i], e.scale[0], e.zero_point[0])));
            }
            free(q);
            ql_tensor_free(orig);
            ql_tensor_free(t);
            ql_encoding_clear(&e);
        }
}

/* Per-channel along `axis` of a tensor of `dims`, against a reference that
 * finds each element's channel by unravelling its flat index. */
static void check_per_channel(tu_rng *rng, int ndim, const int64_t *dims, int axis, bool sym)
{
    ql_qspec s = {8, true, sym, axis};
    ql_encoding e;
    assert_int_equal(ql_encoding_init(&e, &s, dims[axis], NULL), QL_OK);
    for (int64_t c = 0; c < dims[axis]; c++)
        ql_encoding_set_range(&e, c, -0.2 - 0.3 * (double)c, 0.1 + 0.5 * (double)c);
    ql_tensor *t = tu_rand(rng, ndim, dims, -4.0f, 4.0f);
    ql_tensor *orig = ql_tensor_clone(t);
    int64_t n = ql_tensor_numel(t), qmin, qmax;
    ql_qspec_range(&s, &qmin, &qmax);
    int32_t *q = malloc((size_t)n * sizeof *q);
    assert_int_equal(ql_quantize(orig, &e, q, NULL), QL_OK);
    assert_int_equal(ql_fake_quant(t, &e, NULL), QL_OK);
    const float *x = orig->data, *y = t->data;
    for (int64_t i = 0; i < n; i++) {
        int64_t rest = i, c = 0;
        for (int d = ndim - 1; d >= 0; d--) {
            if (d == axis)
                c = rest % dims[d];
            rest /= dims[d];
        }
        assert_int_equal(q[i], ref_q(x[i], e.scale[c], e.zero_point[c], qmin, qmax));
        if (!same_bits(y[i], ref_fq(x[i], e.scale[c], e.zero_point[c], qmin, qmax)))
            fail_msg("rank %d axis %d element %lld channel %lld", ndim, axis, (long long)i,
                     (long long)c);
    }
    free(q);
    ql_tensor_free(orig);
    ql_tensor_free(t);
    ql_encoding_clear(&e);
}

static void test_per_channel_every_axis(void **state)
{
    (void)state;
    tu_rng rng = {11};
    for (int nd = 1; nd <= 5; nd++)
        for (int ax = 0; ax < nd; ax++) {
            int64_t dims[5];
            for (int d = 0; d < nd; d++)
                dims[d] = 2 + (int64_t)((d * 7 + ax * 3 + nd) % 4);
            check_per_channel(&rng, nd, dims, ax, true);
            check_per_channel(&rng, nd, dims, ax, false);
        }
    /* The weight layouts of each op (see the placement rules in qlens-config(5)). */
    int64_t conv[] = {8, 3, 3, 3}, convt[] = {3, 8, 3, 3}, gemm[] = {16, 10}, matmul[] = {4, 16, 10};
    check_per_channel(&rng, 4, conv, 0, true);     /* Conv W [M, C/g, kh, kw] */
    check_per_channel(&rng, 4, convt, 1, true);    /* ConvTranspose W [C, M/g, kh, kw] */
    check_per_channel(&rng, 2, gemm, 0, true);     /* Gemm B transB=1 [N, K] */
    check_per_channel(&rng, 2, gemm, 1, true);     /* Gemm B transB=0 [K, N] */
    check_per_channel(&rng, 3, matmul, 2, true);   /* MatMul B [.., K, N] */
    int64_t wide[] = {3, 100, 2}, wide_last[] = {7, 100}; /* > 64 channels: heap path */
    check_per_channel(&rng, 3, wide, 1, false);
    check_per_channel(&rng, 2, wide_last, 1, true);
    int64_t one[] = {1, 5};
    check_per_channel(&rng, 2, one, 0, true);      /* a single channel */
}

static void test_shape_and_argument_errors(void **state)
{
    (void)state;
    ql_error err;
    int64_t dims[] = {4, 6};
    ql_tensor *t = ql_tensor_new(QL_F32, 2, dims);
    ql_encoding e;
    ql_qspec s = {8, true, true, 2};
    assert_int_equal(ql_encoding_init(&e, &s, 6, &err), QL_OK);
    assert_int_equal(ql_fake_quant(t, &e, &err), QL_ERR_SHAPE); /* axis 2 of rank 2 */
    e.spec.axis = 0;
    assert_int_equal(ql_fake_quant(t, &e, &err), QL_ERR_SHAPE); /* 4 channels, not 6 */
    e.spec.axis = 1;
    assert_int_equal(ql_fake_quant(t, &e, &err), QL_OK);
    e.scale[3] = 0.0f;
    assert_int_equal(ql_fake_quant(t, &e, &err), QL_ERR_ARG);
    e.scale[3] = NAN;
    int32_t q[24];
    assert_int_equal(ql_quantize(t, &e, q, &err), QL_ERR_ARG);
    ql_encoding_clear(&e);
    ql_tensor *ti = ql_tensor_new(QL_I32, 2, dims);
    ql_qspec p = {8, true, true, -1};
    assert_int_equal(ql_encoding_init(&e, &p, 1, &err), QL_OK);
    assert_int_equal(ql_fake_quant(ti, &e, &err), QL_ERR_ARG);
    ql_encoding_clear(&e);
    ql_tensor_free(ti);
    ql_tensor_free(t);
}

/* 32-bit grids take the exact slow path; 16-bit asymmetric grids with a far
 * zero point the fast one. Both equal dequantize(quantize(x)). */
static void test_wide_grids(void **state)
{
    (void)state;
    tu_rng rng = {3};
    ql_qspec specs[] = {{32, true, true, -1}, {16, true, false, -1}, {16, false, false, -1}};
    double ranges[][2] = {{-1e6, 1e6}, {-0.01, 100.0}, {-50.0, 0.001}};
    for (int k = 0; k < 3; k++) {
        ql_encoding e;
        assert_int_equal(ql_encoding_init(&e, &specs[k], 1, NULL), QL_OK);
        ql_encoding_set_range(&e, 0, ranges[k][0], ranges[k][1]);
        int64_t qmin, qmax, dims[] = {1000};
        ql_qspec_range(&specs[k], &qmin, &qmax);
        ql_tensor *t = tu_rand(&rng, 1, dims, (float)ranges[k][0] * 1.5f,
                               (float)ranges[k][1] * 1.5f);
        float *x = t->data;
        x[0] = 3e38f;
        x[1] = -3e38f;
        ql_tensor *orig = ql_tensor_clone(t);
        assert_int_equal(ql_fake_quant(t, &e, NULL), QL_OK);
        const float *x0 = orig->data, *y = t->data;
        for (int i = 0; i < 1000; i++) {
            int32_t q = ql_quantize1(x0[i], e.scale[0], e.zero_point[0], qmin, qmax);
            assert_int_equal(q, ref_q(x0[i], e.scale[0], e.zero_point[0], qmin, qmax));
            assert_true(same_bits(y[i], ql_dequantize1(q, e.scale[0], e.zero_point[0])));
        }
        assert_int_equal(ql_quantize1(x0[0], e.scale[0], e.zero_point[0], qmin, qmax), qmax);
        assert_int_equal(ql_quantize1(x0[1], e.scale[0], e.zero_point[0], qmin, qmax), qmin);
        ql_tensor_free(orig);
        ql_tensor_free(t);
        ql_encoding_clear(&e);
    }
}

/* ---------------------------------------------------------------------------
 * Requantization
 * ------------------------------------------------------------------------- */

/* Exact reference with a 128-bit integer (the engine uses 64-bit words). */
static int32_t ref_requant(int64_t x, ql_requant r)
{
    __int128 p = (__int128)x * r.mult;
    __int128 a = p < 0 ? -p : p;
    if (r.shift > 0)
        a = (a + ((__int128)1 << (r.shift - 1))) >> r.shift;
    else
        a <<= -r.shift;
    __int128 v = p < 0 ? -a : a;
    if (v > INT32_MAX)
        return INT32_MAX;
    if (v < INT32_MIN)
        return INT32_MIN;
    return (int32_t)v;
}

static void test_requant_from_real(void **state)
{
    (void)state;
    tu_rng rng = {5};
    for (int i = 0; i < 20000; i++) {
        double m = ldexp(1.0 + (double)tu_next(&rng) / 2147483648.0,
                         (int)(tu_next(&rng) % 72) - 41); /* 2^-41 .. 2^31 */
        if (i < 100)
            m = ldexp(1.0, i % 62 - 40); /* exact powers of two */
        if (m >= 2147483648.0)
            continue;
        ql_requant r = ql_requant_from_real(m);
        assert_true(r.mult >= (1 << 30));
        double back = ldexp((double)r.mult, -r.shift);
        if (fabs(back - m) > m * ldexp(1.0, -31))
            fail_msg("m %.17g -> mult %d shift %d = %.17g", m, r.mult, r.shift, back);
    }
    ql_requant z = ql_requant_from_real(0.0);
    assert_int_equal(z.mult, 0);
    assert_int_equal(ql_requant_apply(12345, z), 0);
    z = ql_requant_from_real(-1.0);
    assert_int_equal(ql_requant_apply(12345, z), 0);
    ql_requant one = ql_requant_from_real(1.0);
    assert_int_equal(one.mult, 1 << 30);
    assert_int_equal(one.shift, 30);
    /* m just under 2^31 rounds the mantissa up to 2^31: shift -1 */
    ql_requant big = ql_requant_from_real(2147483647.9);
    assert_int_equal(big.mult, 1 << 30);
    assert_int_equal(big.shift, -1);
    assert_int_equal(ql_requant_apply(1, big), INT32_MAX);
    assert_int_equal(ql_requant_apply(-1, big), INT32_MIN);
    assert_int_equal(ql_requant_apply(0, big), 0);
}

static void test_requant_apply(void **state)
{
    (void)state;
    /* Ties round away from zero. */
    ql_requant half = ql_requant_from_real(0.5);
    const int64_t xs[] = {1, -1, 3, -3, 5, -5, 4, -4};
    const int32_t want[] = {1, -1, 2, -2, 3, -3, 2, -2};
    for (int i = 0; i < 8; i++)
        assert_int_equal(ql_requant_apply(xs[i], half), want[i]);

    tu_rng rng = {9};
    const int64_t edges[] = {0, 1, -1, INT32_MAX, INT32_MIN, (int64_t)1 << 40,
                             -((int64_t)1 << 40), INT64_MAX, INT64_MIN, 123456789012345LL};
    int64_t checked = 0, exact_double = 0;
    for (int mi = 0; mi < 3000; mi++) {
        double m = ldexp(1.0 + (double)tu_next(&rng) / 2147483648.0,
                         (int)(tu_next(&rng) % 50) - 40); /* 2^-40 .. 2^10 */
        ql_requant r = ql_requant_from_real(m);
        double mq = ldexp((double)r.mult, -r.shift);
        for (int k = 0; k < 60; k++) {
            int64_t x = k < 10 ? edges[k]
                               : (int64_t)(int32_t)tu_next(&rng) >> (tu_next(&rng) % 31);
            int32_t got = ql_requant_apply(x, r);
            int32_t ref = ref_requant(x, r);
            if (got != ref)
                fail_msg("x %lld mult %d shift %d: got %d want %d", (long long)x, r.mult,
                         r.shift, got, ref);
            /* Against double arithmetic with the real m: within half a unit
             * plus the multiplier's representation error, when not saturated. */
            double real = (double)x * m;
            if (fabs(real) < 2e9 && x > -((int64_t)1 << 40) && x < ((int64_t)1 << 40)) {
                double tol = 0.5 + fabs((double)x) * fabs(mq - m) + fabs(real) * 1e-15;
                if (fabs((double)got - real) > tol)
                    fail_msg("x %lld m %.17g: got %d, real %.17g", (long long)x, m, got, real);
                exact_double += fabs((double)got - (double)x * mq) <= 0.5;
            }
            checked++;
        }
    }
    assert_int_equal(exact_double > 0, 1);
    print_message("requant: %lld (x, m) pairs exact against the 128-bit reference\n",
                  (long long)checked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_encoding_init_copy_equal),
        cmocka_unit_test(test_set_range),
        cmocka_unit_test(test_round_half_even),
        cmocka_unit_test(test_saturation_nan_inf_negzero),
        cmocka_unit_test(test_per_tensor_against_reference),
        cmocka_unit_test(test_per_channel_every_axis),
        cmocka_unit_test(test_shape_and_argument_errors),
        cmocka_unit_test(test_wide_grids),
        cmocka_unit_test(test_requant_from_real),
        cmocka_unit_test(test_requant_apply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
