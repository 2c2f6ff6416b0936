/* Unit tests: the 8-channel-block depthwise convolution
 * (engine/ops/conv_dw8.c) called as ops/conv.c calls it, against a
 * reference written here that performs the operations the kernel promises
 * in the promised order: bias, then every tap in (kernel row, kernel
 * column) order with the padding's zeros included, then the add, then the
 * clamp, in float. Each tap is either a fused multiply-add (GCC contracts
 * the kernel's a += w * x where it optimises fully for FMA hardware) or a
 * multiply then an add (lower optimisation, as in sanitizer builds, or no
 * FMA): the output must equal one of the two references in every element.
 * That is also what the planar depthwise path computes, built alike, so
 * equality here is equality with it. Every case runs on 1, 2 and 3 threads. Shapes are odd on
 * purpose: channel counts not multiples of 8, pixel counts not multiples
 * of 8, rows shorter and longer than 8, strides 1-3, dilations,
 * asymmetric pads, 1-D. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "engine/op.h"
#include "engine/ops/kernels.h"
#include "engine/pool.h"
#include "tests/testutil.h"

typedef struct dwcase {
    int64_t N, C, ih, iw, kh, kw, sh, sw, dh, dw;
    int64_t pt, pl, pb, pr; /* pads: top, left, bottom, right */
    int bias, add, act;
    float lo, hi;
} dwcase;

static int64_t out_extent(int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1)
{
    return (in + p0 + p1 - ((k - 1) * d + 1)) / s + 1;
}

static void ref_dw(const dwcase *c, int64_t OH, int64_t OW, const float *x, const float *w,
                   const float *b, const float *add, float *y, int fma)
{
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t ch = 0; ch < c->C; ch++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    float acc = b ? b[ch] : 0.0f;
                    for (int64_t a = 0; a < c->kh; a++)
                        for (int64_t e = 0; e < c->kw; e++) {
                            int64_t ih = oh * c->sh - c->pt + a * c->dh;
                            int64_t iw = ow * c->sw - c->pl + e * c->dw;
                            float xv = ih < 0 || ih >= c->ih || iw < 0 || iw >= c->iw
                                           ? 0.0f
                                           : x[((n * c->C + ch) * c->ih + ih) * c->iw + iw];
                            float wv = w[(ch * c->kh + a) * c->kw + e];
                            if (fma) {
                                acc = fmaf(wv, xv, acc);
                            } else {
                                volatile float p = wv * xv; /* no contraction */
                                acc = acc + p;
                            }
                        }
                    int64_t q = ((n * c->C + ch) * OH + oh) * OW + ow;
                    if (add)
                        acc += add[q];
                    if (c->act) {
                        acc = acc < c->lo ? c->lo : acc;
                        acc = acc > c->hi ? c->hi : acc;
                    }
                    y[q] = acc;
                }
}

static void check_case(const dwcase *c, uint64_t seed)
{
    tu_rng r = {seed};
    int64_t OH = out_extent(c->ih, c->kh, c->sh, c->dh, c->pt, c->pb);
    int64_t OW = out_extent(c->iw, c->kw, c->sw, c->dw, c->pl, c->pr);
    ql_dconv d = {c->N, c->C, c->C, c->ih, c->iw, OH, OW, c->kh, c->kw,
                  c->sh, c->sw, c->dh, c->dw, c->pt, c->pl};
    assert_true(ql_conv_dw8_fits(&d));
    int64_t nx = c->N * c->C * c->ih * c->iw, nw = c->C * c->kh * c->kw;
    int64_t ny = c->N * c->C * OH * OW;
    float *x = malloc(sizeof(float) * (size_t)nx), *w = malloc(sizeof(float) * (size_t)nw);
    float *b = malloc(sizeof(float) * (size_t)c->C), *add = malloc(sizeof(float) * (size_t)ny);
    float *y = malloc(sizeof(float) * (size_t)ny), *ref = malloc(sizeof(float) * (size_t)ny);
    float *ref2 = malloc(sizeof(float) * (size_t)ny);
    tu_fill(&r, x, nx, -1.0f, 1.0f);
    tu_fill(&r, w, nw, -1.0f, 1.0f);
    tu_fill(&r, b, c->C, -1.0f, 1.0f);
    tu_fill(&r, add, ny, -1.0f, 1.0f);
    ref_dw(c, OH, OW, x, w, c->bias ? b : NULL, c->add ? add : NULL, ref, 1);
    ref_dw(c, OH, OW, x, w, c->bias ? b : NULL, c->add ? add : NULL, ref2, 0);
    ql_act act = {c->act, c->lo, c->hi};
    for (int threads = 1; threads <= 3; threads++) {
        ql_pool *pool = ql_pool_new(threads);
        assert_non_null(pool);
        ql_exec_ctx ctx;
        ql_ctx_init(&ctx, pool);
        ql_error err = {{0}};
        memset(y, 0x7f, sizeof(float) * (size_t)ny); /* garbage: every element must be written */
        ql_status st = ql_conv_dw8(&d, x, w, c->bias ? b : NULL, c->add ? add : NULL, y, &act,
                                   &ctx, &err);
        ql_ctx_destroy(&ctx);
        ql_pool_free(pool);
        if (st != QL_OK)
            fail_msg("run on %d threads: %s", threads, err.msg);
        const float *want = memcmp(y, ref, sizeof(float) * (size_t)ny) ? ref2 : ref;
        for (int64_t i = 0; i < ny; i++)
            if (memcmp(&y[i], &want[i], sizeof(float)) != 0)
                fail_msg("%d threads: element %lld is %.9g, the ordered sum %.9g (%.9g with fused "
                         "multiply-adds)",
                         threads, (long long)i, y[i], ref2[i], ref[i]);
    }
    free(x), free(w), free(b), free(add), free(y), free(ref), free(ref2);
}

/* N, C, ih, iw, kh, kw, sh, sw, dh, dw, pads (t, l, b, r), bias, add, act, lo, hi */
static void test_dw8_shapes(void **state)
{
    (void)state;
    static const dwcase cases[] = {
        /* MobileNet's late layers: 3x3, stride 1 and 2, pad 1 */
        {2, 16, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {2, 24, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {1, 40, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        /* channels not multiples of 8 (a last block of 1-7), pixel counts
         * not multiples of 8 */
        {3, 1, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {1, 13, 9, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        {2, 7, 17, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        /* kernels 5x5 and 7x1, dilation, stride 3, asymmetric pads */
        {1, 9, 12, 13, 5, 5, 1, 2, 2, 1, 4, 2, 3, 2, 1, 0, 0, 0, 0},
        {1, 10, 15, 8, 7, 1, 3, 1, 1, 1, 3, 0, 2, 0, 0, 0, 0, 0, 0},
        {1, 8, 10, 10, 3, 3, 1, 1, 3, 2, 0, 2, 1, 0, 1, 0, 0, 0, 0},
        /* no padding, one output pixel, one input row (1-D) */
        {2, 12, 6, 6, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0},
        {1, 8, 3, 3, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0},
        {2, 11, 1, 33, 1, 3, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0},
        /* images of fewer than 8 pixels; an image whose last row and
         * column no output reads */
        {2, 5, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {1, 9, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {2, 8, 8, 8, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0},
        /* the largest images it takes: 16x16 outputs at stride 1, 28x28
         * strided */
        {1, 9, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {1, 9, 56, 56, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("dw8 case %zu\n", i);
        check_case(&cases[i], 5000 + i);
    }
}

/* Fused epilogues: the clamp alone (Relu6), the add alone, the add then
 * the clamp; without a bias. */
static void test_dw8_fused(void **state)
{
    (void)state;
    static const dwcase cases[] = {
        {2, 20, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 6},
        {1, 12, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 1, -0.5f, 0.25f},
        {2, 11, 9, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
        {1, 17, 10, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, INFINITY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("dw8 fused case %zu\n", i);
        check_case(&cases[i], 6000 + i);
    }
}

/* What it declines, so ops/conv.c keeps the planar path for it. */
static void test_dw8_declines(void **state)
{
    (void)state;
    ql_dconv ok = {1, 96, 96, 14, 14, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1};
    assert_true(ql_conv_dw8_fits(&ok));
    ql_dconv d = ok;
    d.M = 192; /* a channel multiplier */
    assert_false(ql_conv_dw8_fits(&d));
    /* larger images: the planar path, which de-interleaves nothing at
     * stride 1 */
    d = ok, d.ih = d.iw = d.oh = d.ow = 16;
    assert_true(ql_conv_dw8_fits(&d));
    d = ok, d.ih = d.iw = d.oh = d.ow = 17;
    assert_false(ql_conv_dw8_fits(&d));
    d = ok, d.ih = d.iw = 56, d.oh = d.ow = 28, d.sh = d.sw = 2;
    assert_true(ql_conv_dw8_fits(&d));
    d.ih = d.iw = 58, d.oh = d.ow = 29;
    assert_false(ql_conv_dw8_fits(&d));
    d = ok, d.kh = d.kw = 9; /* more than 64 taps */
    assert_false(ql_conv_dw8_fits(&d));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dw8_shapes),
        cmocka_unit_test(test_dw8_fused),
        cmocka_unit_test(test_dw8_declines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
