/* Unit tests: the direct small-channel convolution (engine/ops/conv_direct.c)
 * called as ops/conv.c calls it, against a naive reference written here
 * (double accumulation, ONNX geometry: out = (in + pads - dilated kernel) /
 * stride + 1). Shapes are odd on purpose: channel counts not multiples of
 * the tile, rows not multiples of 8, pads 0/1/2 and asymmetric, strides,
 * dilations, 1-D, batches, bands of rows, rows shorter than a vector
 * (transposed tiles), fused clamp and residual add.
 * Tolerance: |got - ref| <= 1e-4 + 1e-4 * |ref| for data in [-1, 1].
 * Every case runs on 1, 2 and 3 threads and must agree bit for bit. */
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

#define RTOL 1e-4f
#define ATOL 1e-4f

typedef struct dcase {
    int64_t N, C, M, ih, iw, kh, kw, sh, sw, dh, dw;
    int64_t pt, pl, pb, pr; /* pads: top, left, bottom, right */
    int bias, add, act;
    float lo, hi;
} dcase;

static int64_t out_extent(int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1)
{
    return (in + p0 + p1 - ((k - 1) * d + 1)) / s + 1;
}

static void ref_conv(const dcase *c, int64_t OH, int64_t OW, const float *x, const float *w,
                     const float *b, const float *add, double *y)
{
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t m = 0; m < c->M; m++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double acc = b ? b[m] : 0.0;
                    for (int64_t ci = 0; ci < c->C; ci++)
                        for (int64_t a = 0; a < c->kh; a++)
                            for (int64_t e = 0; e < c->kw; e++) {
                                int64_t ih = oh * c->sh - c->pt + a * c->dh;
                                int64_t iw = ow * c->sw - c->pl + e * c->dw;
                                if (ih < 0 || ih >= c->ih || iw < 0 || iw >= c->iw)
                                    continue;
                                acc += (double)x[((n * c->C + ci) * c->ih + ih) * c->iw + iw] *
                                       w[((m * c->C + ci) * c->kh + a) * c->kw + e];
                            }
                    int64_t q = ((n * c->M + m) * OH + oh) * OW + ow;
                    if (add)
                        acc += add[q];
                    if (c->act) {
                        acc = acc < c->lo ? c->lo : acc;
                        acc = acc > c->hi ? c->hi : acc;
                    }
                    y[q] = acc;
                }
}

static ql_status run_direct(const ql_dconv *d, const float *x, const float *w,
                            const float *packed, const float *b, const float *add, float *y,
                            const ql_act *act, int threads, ql_error *err)
{
    ql_pool *pool = ql_pool_new(threads);
    assert_non_null(pool);
    ql_exec_ctx ctx;
    ql_ctx_init(&ctx, pool);
    ql_status st = ql_conv_direct(d, x, w, packed, b, add, y, act, &ctx, err);
    ql_ctx_destroy(&ctx);
    ql_pool_free(pool);
    return st;
}

static void check_case(const dcase *c, uint64_t seed)
{
    tu_rng r = {seed};
    int64_t OH = out_extent(c->ih, c->kh, c->sh, c->dh, c->pt, c->pb);
    int64_t OW = out_extent(c->iw, c->kw, c->sw, c->dw, c->pl, c->pr);
    ql_dconv d = {c->N, c->C, c->M, c->ih, c->iw, OH, OW, c->kh, c->kw,
                  c->sh, c->sw, c->dh, c->dw, c->pt, c->pl};
    /* the case must reach the direct kernel, not only the GEMM path */
    assert_true(ql_conv_direct_fits(&d));
    int64_t nx = c->N * c->C * c->ih * c->iw, nw = c->M * c->C * c->kh * c->kw;
    int64_t ny = c->N * c->M * OH * OW;
    float *x = malloc(sizeof(float) * (size_t)nx), *w = malloc(sizeof(float) * (size_t)nw);
    float *b = malloc(sizeof(float) * (size_t)c->M), *add = malloc(sizeof(float) * (size_t)ny);
    float *y = malloc(sizeof(float) * (size_t)ny), *y2 = malloc(sizeof(float) * (size_t)ny);
    double *ref = malloc(sizeof(double) * (size_t)ny);
    tu_fill(&r, x, nx, -1.0f, 1.0f);
    tu_fill(&r, w, nw, -1.0f, 1.0f);
    tu_fill(&r, b, c->M, -1.0f, 1.0f);
    tu_fill(&r, add, ny, -1.0f, 1.0f);
    ql_act act = {c->act, c->lo, c->hi};
    ql_error err = {{0}};
    for (int threads = 1; threads <= 3; threads++) {
        float *out = threads == 1 ? y : y2;
        memset(out, 0x7f, sizeof(float) * (size_t)ny); /* garbage: every element must be written */
        if (run_direct(&d, x, w, NULL, c->bias ? b : NULL, c->add ? add : NULL, out, &act,
                       threads, &err) != QL_OK)
            fail_msg("run on %d threads: %s", threads, err.msg);
        if (threads > 1 && memcmp(y, y2, sizeof(float) * (size_t)ny) != 0)
            fail_msg("output differs between 1 and %d threads", threads);
    }
    /* weights packed ahead for one image (as Conv's prepare does), used for
     * the whole batch: the same bits; the weights passed are then unread */
    ql_dconv d1 = d;
    d1.N = 1;
    assert_int_equal(ql_conv_direct_layout(&d1), ql_conv_direct_layout(&d));
    float *wp = ql_aligned_alloc(sizeof(float) * (size_t)ql_conv_direct_packed_floats(&d1));
    assert_non_null(wp);
    ql_conv_direct_pack(&d1, w, wp);
    memset(y2, 0x7f, sizeof(float) * (size_t)ny);
    if (run_direct(&d, x, NULL, wp, c->bias ? b : NULL, c->add ? add : NULL, y2, &act, 2, &err) !=
        QL_OK)
        fail_msg("run with packed weights: %s", err.msg);
    if (memcmp(y, y2, sizeof(float) * (size_t)ny) != 0)
        fail_msg("output differs with weights packed ahead");
    ql_aligned_free(wp);
    ref_conv(c, OH, OW, x, w, c->bias ? b : NULL, c->add ? add : NULL, ref);
    for (int64_t i = 0; i < ny; i++)
        if (!tu_close(y[i], (float)ref[i], RTOL, ATOL))
            fail_msg("element %lld is %.7g, expected %.7g", (long long)i, y[i], ref[i]);
    free(x), free(w), free(b), free(add), free(y), free(y2), free(ref);
}

/* N, C, M, ih, iw, kh, kw, sh, sw, dh, dw, pads (t, l, b, r), bias, add, act, lo, hi */
static void test_direct_shapes(void **state)
{
    (void)state;
    static const dcase cases[] = {
        /* the example's layer: 16 channels, 28x28, pad 1 */
        {2, 16, 16, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        /* channels not multiples of the tile, rows not multiples of 8 */
        {2, 5, 7, 13, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {3, 9, 13, 17, 19, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {1, 3, 11, 20, 23, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 1, 0, 0, 0, 0},
        /* output rows of exactly 8, 9, 33 and 64 (chunks of 4 + 4, 3 + 2) */
        {1, 4, 6, 10, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {2, 6, 5, 7, 11, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0},
        {1, 7, 9, 6, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {1, 2, 17, 5, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        /* stride 2, odd extents; 1x3 stride 2; stride (2, 3) */
        {2, 6, 11, 31, 37, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {2, 12, 20, 16, 33, 1, 3, 2, 2, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0},
        {1, 5, 4, 19, 50, 3, 3, 2, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        /* dilations, asymmetric pads, non-square kernels */
        {1, 4, 9, 21, 25, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1, 0, 0, 0, 0},
        {1, 7, 5, 24, 40, 3, 2, 2, 3, 2, 1, 1, 0, 2, 1, 0, 0, 0, 0, 0},
        {2, 3, 8, 15, 30, 2, 5, 1, 1, 3, 2, 0, 2, 1, 0, 1, 0, 0, 0, 0},
        /* 1-D (one row), kernel 5, pad 2 */
        {2, 5, 6, 1, 50, 1, 5, 1, 1, 1, 1, 0, 2, 0, 2, 1, 0, 0, 0, 0},
        /* the longest row handled: 2048 outputs, 64 chunks of 4 vectors */
        {1, 2, 3, 1, 2048, 1, 3, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0},
        /* the channel limits of long rows: 32 in, 32 out */
        {1, 32, 32, 9, 30, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        /* wide rows: planes for a few rows only, so one image is cut into
         * bands whose plane rows overlap */
        {1, 32, 8, 40, 200, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {2, 24, 5, 33, 300, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        /* transposed tiles on long rows (16 or 32 output channels and at
         * least 64 terms), cut into bands */
        {1, 16, 32, 40, 100, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {2, 8, 16, 19, 29, 3, 3, 1, 1, 1, 1, 1, 0, 1, 2, 0, 0, 0, 0, 0},
        /* batch larger than the thread counts */
        {7, 3, 10, 12, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        /* rows shorter than a vector: transposed tiles (16 channels x 6
         * pixels), channel counts not multiples of 16, pixel counts not
         * multiples of 6; the example's late layers (7x7, 4x4) */
        {3, 16, 32, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {3, 32, 32, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {2, 32, 64, 7, 7, 3, 1, 2, 2, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0},
        {2, 64, 64, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {2, 5, 17, 6, 5, 3, 3, 1, 1, 1, 1, 0, 1, 2, 1, 1, 0, 0, 0, 0},
        {1, 7, 33, 9, 7, 3, 2, 2, 1, 2, 3, 1, 2, 1, 0, 0, 0, 0, 0, 0},
        {4, 3, 1, 5, 3, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0},
        {2, 6, 9, 1, 9, 1, 3, 1, 2, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0},
        /* strided 1x1 kernels on short rows (the example's shortcuts), odd
         * extents, a stride of 3 */
        {3, 16, 32, 14, 14, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0},
        {2, 32, 64, 7, 7, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0},
        {2, 5, 19, 11, 13, 1, 1, 3, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("direct case %zu\n", i);
        check_case(&cases[i], 3000 + i);
    }
}

/* Fused epilogues: Relu, Clip, a residual add alone and with a clamp after
 * it (the add comes first), with and without a bias. */
static void test_direct_fused(void **state)
{
    (void)state;
    static const dcase cases[] = {
        {2, 16, 16, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, INFINITY},
        {2, 16, 16, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, INFINITY},
        {1, 9, 14, 10, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, -0.5f, 0.75f},
        {2, 5, 7, 13, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0},
        {1, 7, 9, 6, 33, 3, 3, 2, 1, 1, 2, 2, 1, 0, 2, 1, 1, 1, -0.25f, 0.5f},
        {3, 6, 11, 31, 37, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, INFINITY},
        /* transposed tiles */
        {3, 32, 32, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, INFINITY},
        {2, 5, 17, 6, 5, 3, 3, 1, 1, 1, 1, 0, 1, 2, 1, 0, 1, 0, 0, 0},
        {2, 9, 20, 7, 6, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, -0.5f, 0.25f},
        /* a strided 1x1 shortcut with the block's add and Relu */
        {3, 16, 32, 14, 14, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, INFINITY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("fused case %zu\n", i);
        check_case(&cases[i], 4000 + i);
    }
}

/* What the kernel declines, so ops/conv.c keeps the GEMM path for it. */
static void test_direct_declines(void **state)
{
    (void)state;
    ql_dconv ok = {2, 16, 16, 28, 28, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1};
    assert_true(ql_conv_direct_fits(&ok));
    /* too many channels: 32 for rows of 8 or more, 64 for shorter ones */
    ql_dconv d = ok;
    d.C = 32;
    assert_true(ql_conv_direct_fits(&d));
    d.C = 33;
    assert_false(ql_conv_direct_fits(&d));
    d = ok, d.M = 33;
    assert_false(ql_conv_direct_fits(&d));
    d = ok, d.ih = d.iw = d.oh = d.ow = 7, d.C = d.M = 64;
    assert_true(ql_conv_direct_fits(&d));
    d.M = 65;
    assert_false(ql_conv_direct_fits(&d));
    /* 1x1 kernels: not at stride 1, nor strided with rows of 8 or more;
     * strided with short rows they are taken (no phase planes to build) */
    d = ok, d.kh = d.kw = 1, d.ph = d.pw = 0;
    assert_false(ql_conv_direct_fits(&d));
    d.sh = d.sw = 2, d.oh = d.ow = 14;
    assert_false(ql_conv_direct_fits(&d));
    d.ih = d.iw = 14, d.oh = d.ow = 7;
    assert_true(ql_conv_direct_fits(&d));
    d.sh = d.sw = 1, d.ih = d.iw = 7;
    assert_false(ql_conv_direct_fits(&d));
    /* outputs past the streaming threshold go to the GEMM path's
     * non-temporal stores */
    d = ok, d.N = 2000;
    assert_false(ql_conv_direct_fits(&d));
    /* rows longer than its column chunks cover */
    d = ok, d.N = 1, d.iw = d.ow = 3000;
    assert_false(ql_conv_direct_fits(&d));
    d.iw = d.ow = 2048;
    assert_true(ql_conv_direct_fits(&d));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_direct_shapes),
        cmocka_unit_test(test_direct_fused),
        cmocka_unit_test(test_direct_declines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
