/* Unit tests: Conv, ConvTranspose, MaxPool, AveragePool, the global pools,
 * Gemm and MatMul against brute-force references written here (double
 * accumulation, ONNX geometry worked out independently of the engine).
 * Tolerance: |got - ref| <= 1e-4 + 1e-4 * |ref| for data in [-1, 1].
 * Every case also runs on 1, 2 and 3 threads and must agree bit for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "engine/graph.h"
#include "engine/op.h"
#include "engine/pool.h"
#include "tests/testutil.h"

#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
#include <cblas.h>
#endif

#define RTOL 1e-4f
#define ATOL 1e-4f

/* ---------------------------------------------------------------------------
 * A one-node graph, built through the public graph API
 * ------------------------------------------------------------------------- */
typedef struct tnode {
    ql_graph *g;
    int n_in, n_out;
} tnode;

static tnode tn_new(const char *op, int n_in, int n_out)
{
    tnode t = {ql_graph_new(), n_in, n_out};
    int in[8], out[2];
    char name[16];
    t.g->opset = 19;
    for (int i = 0; i < n_in; i++) {
        snprintf(name, sizeof name, "in%d", i);
        in[i] = ql_graph_value(t.g, name);
    }
    for (int i = 0; i < n_out; i++) {
        snprintf(name, sizeof name, "out%d", i);
        out[i] = ql_graph_value(t.g, name);
    }
    t.g->outputs = malloc(sizeof(int) * (size_t)n_out);
    memcpy(t.g->outputs, out, sizeof(int) * (size_t)n_out);
    t.g->n_outputs = n_out;
    t.g->inputs = malloc(sizeof(int) * (size_t)n_in);
    ql_graph_add_node(t.g, "node", op, "", n_in, in, n_out, out);
    return t;
}

/* Declares input i: a constant (copied) or a graph input of x's shape. */
static void tn_input(tnode *t, int i, const ql_tensor *x, int constant)
{
    ql_value *v = &t->g->values[t->g->nodes[0].in[i]];
    v->dtype = x->dtype;
    v->ndim = x->ndim;
    memcpy(v->dims, x->dims, sizeof v->dims);
    if (constant) {
        v->constant = ql_tensor_clone(x);
    } else {
        v->is_input = true;
        t->g->inputs[t->g->n_inputs++] = t->g->nodes[0].in[i];
    }
}

/* Drops optional input i (absent). */
static void tn_absent(tnode *t, int i) { t->g->nodes[0].in[i] = -1; }

static void tn_ints(tnode *t, const char *name, int n, const int64_t *v)
{
    ql_attr *a = ql_node_add_attr(t->g, 0, name, QL_ATTR_INTS);
    a->n = n;
    a->ints = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    memcpy(a->ints, v, sizeof(int64_t) * (size_t)n);
}

static void tn_int(tnode *t, const char *name, int64_t v)
{
    ql_node_add_attr(t->g, 0, name, QL_ATTR_INT)->i = v;
}

static void tn_float(tnode *t, const char *name, float v)
{
    ql_node_add_attr(t->g, 0, name, QL_ATTR_FLOAT)->f = v;
}

static void tn_string(tnode *t, const char *name, const char *s)
{
    ql_node_add_attr(t->g, 0, name, QL_ATTR_STRING)->s = strdup(s);
}

/* Binds, infers static shapes and prepares. */
static ql_status tn_prepare(tnode *t, ql_error *err)
{
    ql_status st = ql_graph_bind_ops(t->g, err);
    if (st == QL_OK)
        st = ql_graph_infer_shapes(t->g, err);
    if (st == QL_OK)
        st = ql_graph_prepare(t->g, err);
    return st;
}

/* The fused activation the next tn_run asks for, as the executor does. */
static struct {
    int on;
    float lo, hi;
} g_clamp;
/* The residual add the next tn_run asks for (NULL: none). */
static const float *g_add;
/* check_conv: also ask for a fused residual add, of a random tensor */
static int g_case_add;

/* Runs the node on `threads` threads; outputs are new tensors. */
static ql_status tn_run(tnode *t, const ql_tensor *const *in, ql_tensor **out, int threads,
                        ql_error *err)
{
    const ql_node *n = &t->g->nodes[0];
    const ql_op_def *def = ql_op_get(n->op);
    ql_tensor hdr[2];
    ql_tensor *outp[2] = {&hdr[0], &hdr[1]};
    memset(hdr, 0, sizeof hdr);
    ql_status st = def->infer(n, in, outp, err);
    if (st != QL_OK)
        return st;
    for (int i = 0; i < t->n_out; i++) {
        out[i] = ql_tensor_new(hdr[i].dtype, hdr[i].ndim, hdr[i].dims);
        /* garbage, so a kernel that forgets an element is caught */
        memset(out[i]->data, 0x7f, ql_tensor_nbytes(out[i]));
        outp[i] = out[i];
    }
    ql_pool *pool = ql_pool_new(threads);
    ql_exec_ctx ctx;
    ql_ctx_init(&ctx, pool);
    ctx.post_clamp = g_clamp.on;
    ctx.post_lo = g_clamp.lo;
    ctx.post_hi = g_clamp.hi;
    ctx.post_add = g_add;
    st = def->run_f32(n, in, outp, &ctx, err);
    ql_ctx_destroy(&ctx);
    ql_pool_free(pool);
    return st;
}

static void tn_free(tnode *t) { ql_graph_free(t->g); }

/* Runs on 1, 2 and 3 threads, checks the runs agree bit for bit and
 * returns the 1-thread outputs. */
static void run_checked(tnode *t, const ql_tensor *const *in, ql_tensor **out)
{
    ql_error err = {{0}};
    if (tn_run(t, in, out, 1, &err) != QL_OK)
        fail_msg("run: %s", err.msg);
    for (int threads = 2; threads <= 3; threads++) {
        ql_tensor *o2[2] = {0};
        if (tn_run(t, in, o2, threads, &err) != QL_OK)
            fail_msg("run on %d threads: %s", threads, err.msg);
        for (int i = 0; i < t->n_out; i++) {
            assert_int_equal(ql_tensor_nbytes(out[i]), ql_tensor_nbytes(o2[i]));
            if (memcmp(out[i]->data, o2[i]->data, ql_tensor_nbytes(out[i])) != 0)
                fail_msg("output %d differs between 1 and %d threads", i, threads);
            ql_tensor_free(o2[i]);
        }
    }
}

static ql_tensor *rand_tensor(tu_rng *r, int ndim, const int64_t *dims)
{
    ql_tensor *t = ql_tensor_new(QL_F32, ndim, dims);
    tu_fill(r, t->data, ql_tensor_numel(t), -1.0f, 1.0f);
    return t;
}

static void expect_close(const ql_tensor *got, const double *ref, int64_t n, const char *what)
{
    assert_int_equal(ql_tensor_numel(got), n);
    const float *g = got->data;
    for (int64_t i = 0; i < n; i++)
        if (!tu_close(g[i], (float)ref[i], RTOL, ATOL))
            fail_msg("%s: element %lld is %.7g, expected %.7g", what, (long long)i, g[i], ref[i]);
}

/* ---------------------------------------------------------------------------
 * Window geometry, as the ONNX operator docs define it
 * ------------------------------------------------------------------------- */
enum { PAD_NOTSET, PAD_SAME_UPPER, PAD_SAME_LOWER, PAD_VALID };
static const char *const pad_names[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};

typedef struct wspec {
    int nsp;
    int64_t k[3], s[3], d[3], pb[3], pe[3];
    int auto_pad, ceil_mode;
} wspec;

/* Output extent along one axis; updates the pads for auto_pad. */
static int64_t ref_out_extent(wspec *w, int a, int64_t in)
{
    int64_t ext = (w->k[a] - 1) * w->d[a] + 1;
    if (w->auto_pad == PAD_SAME_UPPER || w->auto_pad == PAD_SAME_LOWER) {
        int64_t out = (in + w->s[a] - 1) / w->s[a];
        int64_t total = (out - 1) * w->s[a] + ext - in;
        total = total > 0 ? total : 0;
        w->pb[a] = w->auto_pad == PAD_SAME_UPPER ? total / 2 : total - total / 2;
        w->pe[a] = total - w->pb[a];
        return out;
    }
    if (w->auto_pad == PAD_VALID)
        w->pb[a] = w->pe[a] = 0;
    int64_t span = in + w->pb[a] + w->pe[a] - ext;
    if (!w->ceil_mode)
        return span / w->s[a] + 1;
    int64_t out = (span + w->s[a] - 1) / w->s[a] + 1;
    if ((out - 1) * w->s[a] >= in + w->pb[a])
        out--;
    return out;
}

static void wspec_attrs(tnode *t, const wspec *w, int with_kernel)
{
    if (with_kernel)
        tn_ints(t, "kernel_shape", w->nsp, w->k);
    tn_ints(t, "strides", w->nsp, w->s);
    tn_ints(t, "dilations", w->nsp, w->d);
    if (w->auto_pad == PAD_NOTSET) {
        int64_t pads[6];
        for (int i = 0; i < w->nsp; i++) {
            pads[i] = w->pb[i];
            pads[i + w->nsp] = w->pe[i];
        }
        tn_ints(t, "pads", 2 * w->nsp, pads);
    } else {
        tn_string(t, "auto_pad", pad_names[w->auto_pad]);
    }
}

/* ---------------------------------------------------------------------------
 * Conv
 * ------------------------------------------------------------------------- */
typedef struct conv_case {
    int64_t N, C, M, group;
    int64_t in[3];
    wspec w;
    int bias, weight_input; /* weight as a runtime input (not constant) */
    int act;                /* the executor asks for a fused clamp */
    float act_lo, act_hi;
} conv_case;

static void ref_conv(const conv_case *cc, const wspec *w, const int64_t *out, const float *x,
                     const float *wt, const float *b, const float *add, double *y)
{
    int nsp = w->nsp;
    int64_t in[3] = {1, 1, 1}, o[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1},
            d[3] = {1, 1, 1}, p[3] = {0, 0, 0};
    for (int i = 0; i < nsp; i++) {
        int j = 3 - nsp + i;
        in[j] = cc->in[i], o[j] = out[i], k[j] = w->k[i], s[j] = w->s[i], d[j] = w->d[i],
        p[j] = w->pb[i];
    }
    int64_t cg = cc->C / cc->group, mg = cc->M / cc->group, isz = in[0] * in[1] * in[2];
    int64_t osz = o[0] * o[1] * o[2], kvol = k[0] * k[1] * k[2];
    for (int64_t n = 0; n < cc->N; n++)
        for (int64_t m = 0; m < cc->M; m++)
            for (int64_t q = 0; q < osz; q++) {
                int64_t od = q / (o[1] * o[2]), oh = q / o[2] % o[1], ow = q % o[2];
                double acc = b ? b[m] : 0.0;
                for (int64_t c = 0; c < cg; c++)
                    for (int64_t r = 0; r < kvol; r++) {
                        int64_t ka = r / (k[1] * k[2]), kb = r / k[2] % k[1], ke = r % k[2];
                        int64_t id = od * s[0] - p[0] + ka * d[0], ih = oh * s[1] - p[1] + kb * d[1],
                                iw = ow * s[2] - p[2] + ke * d[2];
                        if (id < 0 || id >= in[0] || ih < 0 || ih >= in[1] || iw < 0 || iw >= in[2])
                            continue;
                        int64_t ci = m / mg * cg + c;
                        acc += (double)x[(n * cc->C + ci) * isz + (id * in[1] + ih) * in[2] + iw] *
                               wt[(m * cg + c) * kvol + r];
                    }
                if (add)
                    acc += add[(n * cc->M + m) * osz + q];
                if (cc->act) {
                    acc = acc < cc->act_lo ? cc->act_lo : acc;
                    acc = acc > cc->act_hi ? cc->act_hi : acc;
                }
                y[(n * cc->M + m) * osz + q] = acc;
            }
}

static void check_conv(const conv_case *cc, uint64_t seed)
{
    tu_rng r = {seed};
    wspec w = cc->w;
    int nsp = w.nsp;
    int64_t xd[5] = {cc->N, cc->C}, wd[5] = {cc->M, cc->C / cc->group}, bd[1] = {cc->M}, out[3];
    for (int i = 0; i < nsp; i++) {
        xd[2 + i] = cc->in[i];
        wd[2 + i] = w.k[i];
        out[i] = ref_out_extent(&w, i, cc->in[i]);
    }
    ql_tensor *x = rand_tensor(&r, nsp + 2, xd), *wt = rand_tensor(&r, nsp + 2, wd);
    ql_tensor *b = rand_tensor(&r, 1, bd);
    tnode t = tn_new("Conv", 3, 1);
    tn_input(&t, 0, x, 0);
    tn_input(&t, 1, wt, !cc->weight_input);
    if (cc->bias)
        tn_input(&t, 2, b, 1);
    else
        tn_absent(&t, 2);
    wspec_attrs(&t, &cc->w, 1);
    tn_int(&t, "group", cc->group);
    ql_error err = {{0}};
    if (tn_prepare(&t, &err) != QL_OK)
        fail_msg("prepare: %s", err.msg);
    const ql_value *yv = &t.g->values[t.g->nodes[0].out[0]];
    assert_int_equal(yv->ndim, nsp + 2);
    for (int i = 0; i < nsp; i++)
        assert_int_equal(yv->dims[2 + i], out[i]);
    const ql_tensor *in[3] = {x, wt, cc->bias ? b : NULL};
    ql_tensor *y[1];
    ql_tensor *add = g_case_add ? rand_tensor(&r, nsp + 2, yv->dims) : NULL;
    g_clamp.on = cc->act, g_clamp.lo = cc->act_lo, g_clamp.hi = cc->act_hi;
    g_add = add ? add->data : NULL;
    run_checked(&t, in, y);
    g_clamp.on = 0;
    g_add = NULL;
    int64_t n = ql_tensor_numel(y[0]);
    double *ref = malloc(sizeof(double) * (size_t)n);
    ref_conv(cc, &w, out, x->data, wt->data, cc->bias ? b->data : NULL, add ? add->data : NULL,
             ref);
    expect_close(y[0], ref, n, "Conv");
    ql_tensor_free(add);
    free(ref);
    ql_tensor_free(y[0]);
    ql_tensor_free(x);
    ql_tensor_free(wt);
    ql_tensor_free(b);
    tn_free(&t);
}

#define W2(kh, kw, sh, sw, dh, dw, pt, pl, pb_, pr)                                          \
    {.nsp = 2, .k = {kh, kw}, .s = {sh, sw}, .d = {dh, dw}, .pb = {pt, pl}, .pe = {pb_, pr}}

static void test_conv_2d(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        /* 3x3 pad 1: phase mode, several k-blocks (K = 576) */
        {1, 64, 24, 1, {13, 11}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {2, 5, 7, 1, {9, 10}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        /* 1x1 on the input itself, odd plane size (tail tiles) */
        {2, 19, 13, 1, {7, 5}, W2(1, 1, 1, 1, 1, 1, 0, 0, 0, 0), 1, 0, 0, 0, 0},
        {1, 8, 6, 1, {16, 16}, W2(1, 1, 1, 1, 1, 1, 0, 0, 0, 0), 0, 0, 0, 0, 0},
        /* strides, asymmetric pads, dilations */
        {1, 3, 8, 1, {23, 19}, W2(7, 7, 2, 2, 1, 1, 3, 3, 3, 3), 1, 0, 0, 0, 0},
        {2, 4, 5, 1, {12, 9}, W2(3, 2, 2, 3, 1, 1, 2, 0, 1, 1), 1, 0, 0, 0, 0},
        {1, 6, 7, 1, {15, 14}, W2(3, 3, 1, 1, 2, 3, 2, 1, 0, 3), 0, 0, 0, 0, 0},
        {1, 4, 4, 1, {11, 13}, W2(3, 3, 3, 2, 2, 1, 1, 0, 2, 1), 1, 0, 0, 0, 0},
        {1, 16, 32, 1, {8, 8}, W2(1, 1, 2, 2, 1, 1, 0, 0, 0, 0), 1, 0, 0, 0, 0},
        /* groups */
        {2, 8, 12, 2, {9, 7}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {1, 12, 8, 4, {6, 10}, W2(3, 1, 2, 1, 1, 1, 1, 0, 1, 0), 1, 0, 0, 0, 0},
        /* depthwise, channel multiplier 1 and 2, strides, dilations */
        {2, 16, 16, 16, {14, 15}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {1, 8, 8, 8, {17, 16}, W2(3, 3, 2, 2, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {1, 6, 12, 6, {9, 11}, W2(5, 5, 1, 2, 2, 1, 4, 2, 3, 2), 0, 0, 0, 0, 0},
        {1, 4, 4, 4, {7, 7}, W2(3, 3, 1, 1, 1, 1, 0, 0, 0, 0), 1, 0, 0, 0, 0},
        /* depthwise on images too large for the 8-channel kernel: the
         * planar path, in bands of output rows (several bands, a short
         * last one, strides, dilations, asymmetric pads, multiplier 2) */
        {1, 8, 8, 8, {70, 66}, W2(3, 3, 2, 2, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {1, 5, 5, 5, {61, 45}, W2(5, 5, 1, 1, 2, 2, 4, 4, 3, 5), 1, 0, 0, 0, 0},
        {2, 4, 8, 4, {90, 50}, W2(3, 3, 2, 1, 1, 1, 1, 0, 1, 1), 0, 0, 0, 0, 0},
        {1, 3, 3, 3, {300, 29}, W2(3, 5, 1, 2, 3, 1, 3, 2, 1, 2), 1, 0, 1, 0, 6.0f},
        {1, 2, 2, 2, {33, 700}, W2(3, 3, 2, 2, 1, 1, 0, 0, 2, 1), 1, 0, 0, 0, 0},
        /* small planes with many rows: im2col mode, blocks across images,
         * row splits */
        {3, 32, 200, 1, {5, 5}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {5, 16, 130, 1, {3, 4}, W2(1, 1, 1, 1, 1, 1, 0, 0, 0, 0), 1, 0, 0, 0, 0},
        {1, 70, 300, 1, {4, 3}, W2(2, 2, 1, 1, 1, 1, 0, 1, 1, 0), 1, 0, 0, 0, 0},
        /* bigger planes (each block builds the plane rows it reads) */
        {2, 8, 16, 1, {41, 37}, W2(3, 3, 2, 2, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {1, 16, 20, 4, {30, 33}, W2(3, 3, 1, 1, 2, 1, 2, 1, 2, 1), 1, 0, 0, 0, 0},
        {1, 3, 12, 1, {64, 60}, W2(7, 5, 2, 3, 1, 2, 3, 4, 2, 4), 1, 0, 0, 0, 0},
        /* weight given at run time: packed per run */
        {2, 6, 9, 1, {8, 9}, W2(3, 3, 1, 2, 1, 1, 1, 1, 1, 1), 1, 1, 0, 0, 0},
        {1, 10, 10, 10, {8, 9}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 1, 0, 0, 0},
        /* fused activations */
        {1, 9, 14, 1, {10, 12}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 1, 0, INFINITY},
        {1, 9, 14, 1, {10, 12}, W2(1, 1, 1, 1, 1, 1, 0, 0, 0, 0), 1, 0, 1, -0.5f, 0.75f},
        {1, 12, 12, 12, {10, 12}, W2(3, 3, 2, 2, 1, 1, 1, 1, 1, 1), 1, 0, 1, 0, 0.5f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("conv case %zu\n", i);
        check_conv(&cases[i], 1000 + i);
    }
}

/* A residual add fused into the conv (ctx->post_add), with and without a
 * clamp after it, on every path: phase mode storing into y (1x1 on the
 * input) and through the column buffer (padded), per-image planes (a
 * batch whose planes exceed 256 KiB), im2col mode with blocks across
 * images, depthwise, partial tiles and row splits. */
static void test_conv_fused_add(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {2, 16, 16, 1, {14, 13}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {2, 16, 16, 1, {14, 13}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 1, 0, INFINITY},
        {1, 24, 40, 1, {11, 12}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 1, -0.25f, 0.5f},
        {2, 19, 13, 1, {7, 5}, W2(1, 1, 1, 1, 1, 1, 0, 0, 0, 0), 1, 0, 1, 0, INFINITY},
        {1, 8, 30, 1, {16, 16}, W2(1, 1, 1, 1, 1, 1, 0, 0, 0, 0), 0, 0, 0, 0, 0},
        {4, 16, 16, 1, {30, 30}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 1, 0, INFINITY},
        {4, 16, 20, 1, {30, 30}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {3, 32, 50, 1, {5, 5}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 1, 0, INFINITY},
        {5, 16, 130, 1, {3, 4}, W2(1, 1, 1, 1, 1, 1, 0, 0, 0, 0), 1, 0, 0, 0, 0},
        {2, 16, 16, 16, {14, 15}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 1, 0, INFINITY},
        {1, 8, 8, 8, {17, 16}, W2(3, 3, 2, 2, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0},
        {2, 8, 16, 1, {41, 37}, W2(3, 3, 2, 2, 1, 1, 1, 1, 1, 1), 1, 0, 1, 0, INFINITY},
        {1, 6, 6, 6, {120, 58}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 1, 0, 6.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("fused add case %zu\n", i);
        g_case_add = i != 6; /* case 6: per-image planes alone */
        check_conv(&cases[i], 2000 + i);
        g_case_add = 0;
    }
}

/* Big tensors: phase planes over 8 MiB are built block by block, outputs
 * over 32 MiB are written with non-temporal stores. */
static void test_conv_big(void **state)
{
    (void)state;
    conv_case c1 = {1, 64, 4, 1, {182, 182}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0};
    check_conv(&c1, 91);
    conv_case c2 = {1, 48, 6, 1, {260, 250}, W2(3, 3, 2, 2, 1, 1, 1, 1, 0, 1), 1, 0, 1, 0, INFINITY};
    check_conv(&c2, 92);
    conv_case c3 = {1, 3, 18, 1, {1000, 1000}, W2(1, 1, 1, 1, 1, 1, 0, 0, 0, 0), 1, 0, 1, -0.5f, 0.5f};
    check_conv(&c3, 90);
    conv_case c4 = {1, 32, 32, 32, {516, 512}, W2(3, 3, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0, 0, 0, 0};
    check_conv(&c4, 93);
}

static void test_conv_auto_pad(void **state)
{
    (void)state;
    for (int ap = PAD_SAME_UPPER; ap <= PAD_VALID; ap++) {
        conv_case c1 = {2, 3, 4, 1, {10, 7}, W2(4, 3, 2, 3, 1, 1, 0, 0, 0, 0), 1, 0, 0, 0, 0};
        c1.w.auto_pad = ap;
        check_conv(&c1, 50 + (uint64_t)ap);
        conv_case c2 = {1, 6, 6, 6, {9, 8}, W2(3, 3, 2, 2, 1, 1, 0, 0, 0, 0), 1, 0, 0, 0, 0};
        c2.w.auto_pad = ap;
        check_conv(&c2, 60 + (uint64_t)ap);
        conv_case c3 = {1, 2, 3, 1, {11}, {.nsp = 1, .k = {4}, .s = {3}, .d = {2}}, 1, 0, 0, 0, 0};
        c3.w.auto_pad = ap;
        check_conv(&c3, 70 + (uint64_t)ap);
    }
}

static void test_conv_1d_3d(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {2, 5, 6, 1, {17}, {.nsp = 1, .k = {3}, .s = {1}, .d = {1}, .pb = {1}, .pe = {1}}, 1, 0, 0, 0, 0},
        {1, 4, 8, 2, {20}, {.nsp = 1, .k = {5}, .s = {2}, .d = {2}, .pb = {3}, .pe = {0}}, 1, 0, 0, 0, 0},
        {1, 6, 6, 6, {33}, {.nsp = 1, .k = {3}, .s = {1}, .d = {1}, .pb = {1}, .pe = {1}}, 1, 0, 0, 0, 0},
        {1, 3, 4, 1, {40}, {.nsp = 1, .k = {1}, .s = {1}, .d = {1}}, 0, 0, 0, 0, 0},
        {2, 3, 5, 1, {5, 6, 7},
         {.nsp = 3, .k = {3, 2, 3}, .s = {1, 2, 1}, .d = {1, 1, 2}, .pb = {1, 0, 2}, .pe = {1, 1, 0}},
         1, 0, 0, 0, 0},
        {1, 4, 4, 2, {4, 5, 6},
         {.nsp = 3, .k = {2, 2, 2}, .s = {2, 1, 1}, .d = {1, 1, 1}, .pb = {0, 1, 0}, .pe = {1, 0, 1}},
         0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_conv(&cases[i], 2000 + i);
}

/* A Conv node that must fail at prepare with a message mentioning `needle`. */
static void expect_conv_error(const int64_t *xd, const int64_t *wd, int64_t group,
                              const int64_t *ks, int nks, const int64_t *pads, int npads,
                              const char *auto_pad, const char *needle)
{
    tu_rng r = {7};
    ql_tensor *x = rand_tensor(&r, 4, xd), *w = rand_tensor(&r, 4, wd);
    tnode t = tn_new("Conv", 2, 1);
    tn_input(&t, 0, x, 0);
    tn_input(&t, 1, w, 1);
    tn_int(&t, "group", group);
    if (ks)
        tn_ints(&t, "kernel_shape", nks, ks);
    if (pads)
        tn_ints(&t, "pads", npads, pads);
    if (auto_pad)
        tn_string(&t, "auto_pad", auto_pad);
    ql_error err = {{0}};
    assert_int_not_equal(tn_prepare(&t, &err), QL_OK);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not mention '%s'", err.msg, needle);
    /* the kernel refuses the same node when run directly */
    const ql_tensor *in[2] = {x, w};
    ql_tensor *hdr = ql_tensor_new(QL_F32, 0, NULL), *outp[1] = {hdr};
    err.msg[0] = '\0';
    assert_int_not_equal(ql_op_get(QL_OP_CONV)->infer(&t.g->nodes[0], in, outp, &err), QL_OK);
    assert_non_null(strstr(err.msg, needle));
    ql_tensor_free(hdr);
    ql_tensor_free(x);
    ql_tensor_free(w);
    tn_free(&t);
}

static void test_conv_errors(void **state)
{
    (void)state;
    int64_t x[4] = {1, 6, 8, 8}, w[4] = {4, 6, 3, 3}, wg[4] = {4, 3, 3, 3}, w5[4] = {5, 2, 3, 3};
    int64_t k33[2] = {3, 3}, k55[2] = {5, 5}, pads3[3] = {1, 1, 1}, negp[4] = {-1, 0, 0, 0};
    expect_conv_error(x, w, 1, k55, 2, NULL, 0, NULL, "kernel_shape");
    expect_conv_error(x, w, 1, k33, 1, NULL, 0, NULL, "kernel_shape");
    expect_conv_error(x, wg, 4, NULL, 0, NULL, 0, NULL, "group");
    expect_conv_error(x, w5, 3, NULL, 0, NULL, 0, NULL, "group");
    expect_conv_error(x, wg, 1, NULL, 0, NULL, 0, NULL, "channels");
    expect_conv_error(x, w, 1, NULL, 0, pads3, 3, NULL, "pads");
    expect_conv_error(x, w, 1, NULL, 0, negp, 4, NULL, "pads");
    expect_conv_error(x, w, 1, NULL, 0, NULL, 0, "SAME_MIDDLE", "auto_pad");
    expect_conv_error(x, w, 0, NULL, 0, NULL, 0, NULL, "group");
}

/* ---------------------------------------------------------------------------
 * ConvTranspose
 * ------------------------------------------------------------------------- */
typedef struct convt_case {
    int64_t N, C, M, group; /* M = output channels */
    int64_t in[3];
    int nsp;
    int64_t k[3], s[3], d[3], pb[3], pe[3], opad[3];
    int64_t oshape[3]; /* output_shape, used when oshape[0] > 0 */
    int auto_pad, bias;
} convt_case;

static void check_convt(const convt_case *cc, uint64_t seed)
{
    tu_rng r = {seed};
    int nsp = cc->nsp;
    int64_t xd[5] = {cc->N, cc->C}, wd[5] = {cc->C, cc->M / cc->group}, bd[1] = {cc->M};
    int64_t out[3] = {1, 1, 1}, pb[3] = {0, 0, 0};
    for (int i = 0; i < nsp; i++) {
        xd[2 + i] = cc->in[i];
        wd[2 + i] = cc->k[i];
        int64_t full = cc->s[i] * (cc->in[i] - 1) + cc->opad[i] + (cc->k[i] - 1) * cc->d[i] + 1;
        int64_t target = cc->oshape[0] > 0 ? cc->oshape[i]
                         : cc->auto_pad == PAD_SAME_UPPER || cc->auto_pad == PAD_SAME_LOWER
                             ? cc->in[i] * cc->s[i] : -1;
        if (target >= 0) {
            int64_t total = full - target > 0 ? full - target : 0;
            pb[i] = cc->auto_pad == PAD_SAME_UPPER ? total / 2 : total - total / 2;
            out[i] = target;
        } else {
            pb[i] = cc->pb[i];
            out[i] = full - cc->pb[i] - cc->pe[i];
        }
    }
    ql_tensor *x = rand_tensor(&r, nsp + 2, xd), *wt = rand_tensor(&r, nsp + 2, wd);
    ql_tensor *b = rand_tensor(&r, 1, bd);
    tnode t = tn_new("ConvTranspose", 3, 1);
    tn_input(&t, 0, x, 0);
    tn_input(&t, 1, wt, 1);
    if (cc->bias)
        tn_input(&t, 2, b, 1);
    else
        tn_absent(&t, 2);
    tn_int(&t, "group", cc->group);
    tn_ints(&t, "strides", nsp, cc->s);
    tn_ints(&t, "dilations", nsp, cc->d);
    tn_ints(&t, "output_padding", nsp, cc->opad);
    if (cc->oshape[0] > 0)
        tn_ints(&t, "output_shape", nsp, cc->oshape);
    if (cc->auto_pad != PAD_NOTSET) {
        tn_string(&t, "auto_pad", pad_names[cc->auto_pad]);
    } else if (cc->oshape[0] <= 0) {
        int64_t pads[6];
        for (int i = 0; i < nsp; i++)
            pads[i] = cc->pb[i], pads[i + nsp] = cc->pe[i];
        tn_ints(&t, "pads", 2 * nsp, pads);
    }
    ql_error err = {{0}};
    if (tn_prepare(&t, &err) != QL_OK)
        fail_msg("prepare: %s", err.msg);
    const ql_tensor *in[3] = {x, wt, cc->bias ? b : NULL};
    ql_tensor *y[1];
    run_checked(&t, in, y);
    for (int i = 0; i < nsp; i++)
        assert_int_equal(y[0]->dims[2 + i], out[i]);
    /* reference: scatter every input element through the kernel */
    int64_t io[3] = {1, 1, 1}, oo[3] = {1, 1, 1}, kk[3] = {1, 1, 1}, ss[3] = {1, 1, 1},
            dd[3] = {1, 1, 1}, pp[3] = {0, 0, 0};
    for (int i = 0; i < nsp; i++) {
        int j = 3 - nsp + i;
        io[j] = cc->in[i], oo[j] = out[i], kk[j] = cc->k[i], ss[j] = cc->s[i], dd[j] = cc->d[i],
        pp[j] = pb[i];
    }
    int64_t osz = oo[0] * oo[1] * oo[2], isz = io[0] * io[1] * io[2], kvol = kk[0] * kk[1] * kk[2];
    int64_t cg = cc->C / cc->group, mg = cc->M / cc->group, n = cc->N * cc->M * osz;
    double *ref = calloc((size_t)n, sizeof(double));
    const float *xv = x->data, *wv = wt->data, *bv = b->data;
    for (int64_t nn = 0; nn < cc->N; nn++) {
        for (int64_t m = 0; m < cc->M; m++)
            for (int64_t q = 0; q < osz; q++)
                ref[(nn * cc->M + m) * osz + q] = cc->bias ? bv[m] : 0.0;
        for (int64_t c = 0; c < cc->C; c++)
            for (int64_t q = 0; q < isz; q++)
                for (int64_t mm = 0; mm < mg; mm++)
                    for (int64_t rr = 0; rr < kvol; rr++) {
                        int64_t id = q / (io[1] * io[2]), ih = q / io[2] % io[1], iw = q % io[2];
                        int64_t ka = rr / (kk[1] * kk[2]), kb = rr / kk[2] % kk[1], ke = rr % kk[2];
                        int64_t od = id * ss[0] - pp[0] + ka * dd[0];
                        int64_t oh = ih * ss[1] - pp[1] + kb * dd[1];
                        int64_t ow = iw * ss[2] - pp[2] + ke * dd[2];
                        if (od < 0 || od >= oo[0] || oh < 0 || oh >= oo[1] || ow < 0 || ow >= oo[2])
                            continue;
                        int64_t m = c / cg * mg + mm;
                        ref[(nn * cc->M + m) * osz + (od * oo[1] + oh) * oo[2] + ow] +=
                            (double)xv[(nn * cc->C + c) * isz + q] * wv[(c * mg + mm) * kvol + rr];
                    }
    }
    expect_close(y[0], ref, n, "ConvTranspose");
    free(ref);
    ql_tensor_free(y[0]);
    ql_tensor_free(x);
    ql_tensor_free(wt);
    ql_tensor_free(b);
    tn_free(&t);
}

static void test_conv_transpose(void **state)
{
    (void)state;
    static const convt_case cases[] = {
        {1, 1, 2, 1, {3, 3}, 2, {3, 3}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, {0}, 0, 0},
        {2, 4, 6, 1, {5, 4}, 2, {3, 2}, {3, 2}, {1, 1}, {1, 2}, {1, 2}, {0, 0}, {0}, 0, 1},
        {1, 3, 4, 1, {3, 3}, 2, {3, 3}, {3, 2}, {1, 1}, {0, 0}, {0, 0}, {1, 1}, {0}, 0, 1},
        {1, 3, 4, 1, {3, 3}, 2, {3, 3}, {3, 2}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, {10, 8}, 0, 1},
        {1, 2, 2, 1, {3, 3}, 2, {2, 2}, {1, 1}, {2, 2}, {0, 0}, {0, 0}, {0, 0}, {0}, 0, 0},
        {1, 4, 6, 2, {4, 5}, 2, {3, 3}, {2, 2}, {1, 1}, {1, 0}, {0, 1}, {1, 0}, {0}, 0, 1},
        {1, 6, 6, 6, {4, 4}, 2, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, {0, 0}, {0}, 0, 1},
        {1, 2, 3, 1, {3, 3}, 2, {3, 3}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, {0}, PAD_SAME_UPPER, 1},
        {1, 2, 3, 1, {3, 4}, 2, {3, 3}, {2, 3}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, {0}, PAD_SAME_LOWER, 0},
        {2, 3, 2, 1, {6}, 1, {3}, {2}, {1}, {1}, {0}, {1}, {0}, 0, 1},
        {1, 1, 2, 1, {3, 4, 5}, 3, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}, {0}, 0, 0},
        {1, 2, 4, 2, {2, 3, 2}, 3, {2, 3, 2}, {2, 1, 2}, {1, 2, 1}, {1, 0, 0}, {0, 1, 1}, {1, 0, 0}, {0}, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_convt(&cases[i], 3000 + i);
}

/* ---------------------------------------------------------------------------
 * MaxPool / AveragePool
 * ------------------------------------------------------------------------- */
typedef struct pool_case {
    int is_max;
    int64_t N, C, in[3];
    wspec w;
    int include_pad;
} pool_case;

static void ref_pool(const pool_case *pc, const wspec *w, const int64_t *out, const float *x,
                     double *y, int64_t *idx, int col_major)
{
    int nsp = w->nsp;
    int64_t in[3] = {1, 1, 1}, o[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1},
            d[3] = {1, 1, 1}, pb[3] = {0, 0, 0}, pe[3] = {0, 0, 0};
    for (int i = 0; i < nsp; i++) {
        int j = 3 - nsp + i;
        in[j] = pc->in[i], o[j] = out[i], k[j] = w->k[i], s[j] = w->s[i], d[j] = w->d[i];
        pb[j] = w->pb[i], pe[j] = w->pe[i];
    }
    int64_t isz = in[0] * in[1] * in[2], osz = o[0] * o[1] * o[2];
    for (int64_t p = 0; p < pc->N * pc->C; p++)
        for (int64_t q = 0; q < osz; q++) {
            int64_t oc[3] = {q / (o[1] * o[2]), q / o[2] % o[1], q % o[2]};
            double acc = pc->is_max ? -INFINITY : 0.0;
            int64_t cnt = 0, best = -1;
            for (int64_t r = 0; r < k[0] * k[1] * k[2]; r++) {
                int64_t kc[3] = {r / (k[1] * k[2]), r / k[2] % k[1], r % k[2]}, ic[3];
                int inside = 1, inpad = 1;
                for (int a = 0; a < 3; a++) {
                    ic[a] = oc[a] * s[a] - pb[a] + kc[a] * d[a];
                    inside &= ic[a] >= 0 && ic[a] < in[a];
                    inpad &= ic[a] >= -pb[a] && ic[a] < in[a] + pe[a];
                }
                cnt += pc->include_pad ? inpad : inside;
                if (!inside)
                    continue;
                int64_t at = (ic[0] * in[1] + ic[1]) * in[2] + ic[2];
                double v = x[p * isz + at];
                if (!pc->is_max) {
                    acc += v;
                } else if (v > acc) {
                    acc = v;
                    best = col_major ? (ic[2] * in[1] + ic[1]) * in[0] + ic[0] : at;
                }
            }
            y[p * osz + q] = pc->is_max ? acc : acc / (double)cnt;
            if (idx)
                idx[p * osz + q] = p * isz + best;
        }
}

static void check_pool(const pool_case *pc, uint64_t seed, int indices, int col_major)
{
    tu_rng r = {seed};
    wspec w = pc->w;
    int nsp = w.nsp;
    int64_t xd[5] = {pc->N, pc->C}, out[3];
    for (int i = 0; i < nsp; i++) {
        xd[2 + i] = pc->in[i];
        out[i] = ref_out_extent(&w, i, pc->in[i]);
    }
    ql_tensor *x = rand_tensor(&r, nsp + 2, xd);
    tnode t = tn_new(pc->is_max ? "MaxPool" : "AveragePool", 1, indices ? 2 : 1);
    tn_input(&t, 0, x, 0);
    wspec_attrs(&t, &pc->w, 1);
    if (pc->w.ceil_mode)
        tn_int(&t, "ceil_mode", 1);
    if (pc->include_pad)
        tn_int(&t, "count_include_pad", 1);
    if (col_major)
        tn_int(&t, "storage_order", 1);
    ql_error err = {{0}};
    if (tn_prepare(&t, &err) != QL_OK)
        fail_msg("prepare: %s", err.msg);
    const ql_tensor *in[1] = {x};
    ql_tensor *y[2] = {0};
    run_checked(&t, in, y);
    for (int i = 0; i < nsp; i++)
        assert_int_equal(y[0]->dims[2 + i], out[i]);
    int64_t n = ql_tensor_numel(y[0]);
    double *ref = malloc(sizeof(double) * (size_t)n);
    int64_t *idx = indices ? malloc(sizeof(int64_t) * (size_t)n) : NULL;
    ref_pool(pc, &w, out, x->data, ref, idx, col_major);
    expect_close(y[0], ref, n, pc->is_max ? "MaxPool" : "AveragePool");
    if (indices) {
        assert_int_equal(y[1]->dtype, QL_I64);
        assert_memory_equal(y[1]->data, idx, sizeof(int64_t) * (size_t)n);
        ql_tensor_free(y[1]);
    }
    free(idx);
    free(ref);
    ql_tensor_free(y[0]);
    ql_tensor_free(x);
    tn_free(&t);
}

static void test_pools(void **state)
{
    (void)state;
    static const pool_case cases[] = {
        {1, 2, 64, {112, 112}, W2(3, 3, 2, 2, 1, 1, 1, 1, 1, 1), 0},
        {1, 1, 3, {32, 32}, W2(2, 2, 1, 1, 1, 1, 0, 0, 0, 0), 0},
        {1, 1, 3, {28, 27}, W2(3, 3, 1, 1, 1, 1, 2, 2, 2, 2), 0},
        {1, 1, 1, {5, 5}, W2(5, 5, 1, 1, 1, 1, 2, 2, 2, 2), 0},
        {1, 1, 2, {12, 13}, W2(5, 5, 3, 3, 1, 1, 0, 0, 0, 0), 0},
        {1, 1, 2, {9, 11}, W2(2, 3, 1, 2, 2, 2, 1, 0, 0, 2), 0},
        {1, 2, 3, {10, 9}, W2(3, 2, 3, 2, 1, 1, 2, 1, 1, 0), 0},
        {0, 1, 3, {28, 28}, W2(3, 3, 1, 1, 1, 1, 2, 2, 2, 2), 0},
        {0, 1, 3, {28, 28}, W2(3, 3, 1, 1, 1, 1, 2, 2, 2, 2), 1},
        {0, 1, 1, {5, 5}, W2(5, 5, 1, 1, 1, 1, 2, 2, 2, 2), 1},
        {0, 2, 3, {13, 12}, W2(3, 4, 2, 3, 1, 1, 1, 0, 2, 1), 0},
        {0, 2, 3, {13, 12}, W2(3, 4, 2, 3, 1, 1, 1, 0, 2, 1), 1},
        {0, 1, 2, {11, 10}, W2(3, 3, 2, 2, 2, 1, 1, 1, 1, 1), 1},
        {0, 1, 4, {8, 8}, W2(8, 8, 1, 1, 1, 1, 0, 0, 0, 0), 0},
        /* 2x2 stride 2 without padding (MaxPool's row path): even and odd
         * extents, rows of whole vectors and with tails */
        {1, 2, 16, {28, 28}, W2(2, 2, 2, 2, 1, 1, 0, 0, 0, 0), 0},
        {1, 1, 3, {29, 27}, W2(2, 2, 2, 2, 1, 1, 0, 0, 0, 0), 0},
        {1, 1, 2, {6, 70}, W2(2, 2, 2, 2, 1, 1, 0, 0, 0, 0), 0},
        {1, 1, 2, {3, 33}, W2(2, 2, 2, 2, 1, 1, 0, 0, 0, 0), 0},
        {0, 1, 3, {29, 27}, W2(2, 2, 2, 2, 1, 1, 0, 0, 0, 0), 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_pool(&cases[i], 4000 + i, 0, 0);
        /* the same windows with ceil_mode */
        pool_case c = cases[i];
        c.w.ceil_mode = 1;
        check_pool(&c, 4100 + i, 0, 0);
    }
    for (int is_max = 0; is_max < 2; is_max++)
        for (int ap = PAD_SAME_UPPER; ap <= PAD_VALID; ap++) {
            pool_case c = {is_max, 1, 3, {11, 12}, W2(3, 2, 2, 2, 1, 1, 0, 0, 0, 0), 0};
            c.w.auto_pad = ap;
            check_pool(&c, 4200 + (uint64_t)ap, 0, 0);
        }
    /* 1-D and 3-D */
    pool_case p1 = {1, 1, 3, {32}, {.nsp = 1, .k = {2}, .s = {1}, .d = {1}}, 0};
    check_pool(&p1, 4300, 0, 0);
    p1.is_max = 0;
    p1.w.pb[0] = 1, p1.w.s[0] = 3, p1.include_pad = 1;
    check_pool(&p1, 4301, 0, 0);
    pool_case p3 = {1, 1, 2, {6, 7, 5},
                    {.nsp = 3, .k = {2, 3, 2}, .s = {1, 2, 1}, .d = {1, 1, 2}, .pb = {1, 0, 1}, .pe = {0, 1, 1}},
                    0};
    check_pool(&p3, 4302, 0, 0);
    p3.is_max = 0;
    check_pool(&p3, 4303, 0, 0);
    p3.include_pad = 1, p3.w.ceil_mode = 1;
    check_pool(&p3, 4304, 0, 0);
}

static void test_maxpool_indices_and_u8(void **state)
{
    (void)state;
    pool_case c = {1, 2, 3, {5, 6}, W2(3, 3, 2, 1, 1, 1, 1, 1, 1, 0), 0};
    check_pool(&c, 5000, 1, 0);
    check_pool(&c, 5001, 1, 1);
    pool_case c3 = {1, 1, 2, {3, 4, 5}, {.nsp = 3, .k = {2, 2, 2}, .s = {1, 1, 2}, .d = {1, 1, 1}}, 0};
    check_pool(&c3, 5002, 1, 1);

    /* u8 MaxPool with padding (ONNX test maxpool_2d_uint8 style) */
    int64_t xd[4] = {1, 1, 5, 5};
    ql_tensor *x = ql_tensor_new(QL_U8, 4, xd);
    uint8_t *xv = x->data;
    for (int i = 0; i < 25; i++)
        xv[i] = (uint8_t)(i * 37 % 251);
    tnode t = tn_new("MaxPool", 1, 1);
    tn_input(&t, 0, x, 0);
    int64_t k[2] = {5, 5}, pads[4] = {2, 2, 2, 2};
    tn_ints(&t, "kernel_shape", 2, k);
    tn_ints(&t, "pads", 4, pads);
    ql_error err = {{0}};
    if (tn_prepare(&t, &err) != QL_OK)
        fail_msg("prepare: %s", err.msg);
    const ql_tensor *in[1] = {x};
    ql_tensor *y[1];
    run_checked(&t, in, y);
    assert_int_equal(y[0]->dtype, QL_U8);
    const uint8_t *yv = y[0]->data;
    for (int oh = 0; oh < 5; oh++)
        for (int ow = 0; ow < 5; ow++) {
            uint8_t m = 0;
            for (int ih = oh - 2; ih <= oh + 2; ih++)
                for (int iw = ow - 2; iw <= ow + 2; iw++)
                    if (ih >= 0 && ih < 5 && iw >= 0 && iw < 5 && xv[ih * 5 + iw] > m)
                        m = xv[ih * 5 + iw];
            assert_int_equal(yv[oh * 5 + ow], m);
        }
    ql_tensor_free(y[0]);
    ql_tensor_free(x);
    tn_free(&t);
}

static void test_pool_errors(void **state)
{
    (void)state;
    tu_rng r = {9};
    int64_t xd[4] = {1, 2, 6, 6};
    ql_tensor *x = rand_tensor(&r, 4, xd);
    static const struct {
        const char *op, *attr, *needle;
        int n;
        int64_t v[4];
    } bad[] = {
        {"MaxPool", NULL, "kernel_shape", 0, {0}},
        {"MaxPool", "kernel_shape", "kernel_shape", 3, {2, 2, 2}},
        {"AveragePool", "strides", "strides", 2, {0, 1}},
        {"MaxPool", "pads", "pads", 2, {1, 1}},
        {"AveragePool", "kernel_shape", "larger", 2, {9, 2}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tnode t = tn_new(bad[i].op, 1, 1);
        tn_input(&t, 0, x, 0);
        int64_t k[2] = {2, 2};
        if (!bad[i].attr || strcmp(bad[i].attr, "kernel_shape") != 0) {
            if (bad[i].attr)
                tn_ints(&t, "kernel_shape", 2, k);
        }
        if (bad[i].attr)
            tn_ints(&t, bad[i].attr, bad[i].n, bad[i].v);
        ql_error err = {{0}};
        assert_int_not_equal(tn_prepare(&t, &err), QL_OK);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("error '%s' does not mention '%s'", err.msg, bad[i].needle);
        tn_free(&t);
    }
    ql_tensor_free(x);
}

static void test_global_pools(void **state)
{
    (void)state;
    static const int64_t shapes[][5] = {{2, 5, 7, 7, 0}, {1, 3, 5, 0, 0}, {2, 2, 3, 4, 5}, {1, 64, 1, 1, 0}};
    static const int ranks[] = {4, 3, 5, 4};
    for (int s = 0; s < 4; s++)
        for (int is_max = 0; is_max < 2; is_max++) {
            tu_rng r = {6000 + (uint64_t)s};
            ql_tensor *x = rand_tensor(&r, ranks[s], shapes[s]);
            tnode t = tn_new(is_max ? "GlobalMaxPool" : "GlobalAveragePool", 1, 1);
            tn_input(&t, 0, x, 0);
            ql_error err = {{0}};
            if (tn_prepare(&t, &err) != QL_OK)
                fail_msg("prepare: %s", err.msg);
            const ql_tensor *in[1] = {x};
            ql_tensor *y[1];
            run_checked(&t, in, y);
            assert_int_equal(y[0]->ndim, ranks[s]);
            int64_t planes = shapes[s][0] * shapes[s][1], size = ql_tensor_numel(x) / planes;
            double *ref = malloc(sizeof(double) * (size_t)planes);
            const float *xv = x->data;
            for (int64_t p = 0; p < planes; p++) {
                double acc = is_max ? -INFINITY : 0.0;
                for (int64_t i = 0; i < size; i++)
                    acc = is_max ? (xv[p * size + i] > acc ? xv[p * size + i] : acc)
                                 : acc + xv[p * size + i];
                ref[p] = is_max ? acc : acc / (double)size;
            }
            expect_close(y[0], ref, planes, "global pool");
            free(ref);
            ql_tensor_free(y[0]);
            ql_tensor_free(x);
            tn_free(&t);
        }
}

/* ---------------------------------------------------------------------------
 * Gemm / MatMul
 * ------------------------------------------------------------------------- */
static void check_gemm(int64_t M, int64_t N, int64_t K, int ta, int tb, float alpha, float beta,
                       int cndim, const int64_t *cdims, uint64_t seed)
{
    tu_rng r = {seed};
    int64_t ad[2] = {ta ? K : M, ta ? M : K}, bd[2] = {tb ? N : K, tb ? K : N};
    ql_tensor *a = rand_tensor(&r, 2, ad), *b = rand_tensor(&r, 2, bd);
    ql_tensor *c = cndim >= 0 ? rand_tensor(&r, cndim, cdims) : NULL;
    tnode t = tn_new("Gemm", 3, 1);
    tn_input(&t, 0, a, 0);
    tn_input(&t, 1, b, 1);
    if (c)
        tn_input(&t, 2, c, 1);
    else
        tn_absent(&t, 2);
    tn_int(&t, "transA", ta);
    tn_int(&t, "transB", tb);
    tn_float(&t, "alpha", alpha);
    tn_float(&t, "beta", beta);
    ql_error err = {{0}};
    if (tn_prepare(&t, &err) != QL_OK)
        fail_msg("prepare: %s", err.msg);
    const ql_tensor *in[3] = {a, b, c};
    ql_tensor *y[1];
    run_checked(&t, in, y);
    assert_int_equal(y[0]->dims[0], M);
    assert_int_equal(y[0]->dims[1], N);
    double *ref = malloc(sizeof(double) * (size_t)(M * N));
    const float *av = a->data, *bv = b->data;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)av[ta ? k * M + i : i * K + k] * bv[tb ? j * K + k : k * N + j];
            acc *= alpha;
            if (c) {
                const float *cv = c->data;
                int64_t cm = cndim == 2 ? cdims[0] : 1, cn = cndim >= 1 ? cdims[cndim - 1] : 1;
                acc += beta * cv[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
            }
            if (g_clamp.on)
                acc = acc < g_clamp.lo ? g_clamp.lo : acc > g_clamp.hi ? g_clamp.hi : acc;
            ref[i * N + j] = acc;
        }
    expect_close(y[0], ref, M * N, "Gemm");
    free(ref);
    ql_tensor_free(y[0]);
    ql_tensor_free(a);
    ql_tensor_free(b);
    ql_tensor_free(c);
    tn_free(&t);
}

static void test_gemm(void **state)
{
    (void)state;
    int64_t c_m_n[2] = {3, 5}, c_1_n[2] = {1, 5}, c_n[1] = {5}, c_m_1[2] = {3, 1}, c_1[1] = {1};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(3, 5, 4, ta, tb, 1.0f, 1.0f, 2, c_m_n, 7000);
            check_gemm(3, 5, 4, ta, tb, 0.25f, 0.35f, 2, c_1_n, 7001);
            check_gemm(3, 5, 7, ta, tb, 0.5f, 1.0f, 1, c_n, 7002);
            check_gemm(3, 5, 2, ta, tb, 1.0f, 0.5f, 2, c_m_1, 7003);
            check_gemm(3, 5, 6, ta, tb, 1.0f, 1.0f, 0, NULL, 7004);
            check_gemm(3, 5, 6, ta, tb, 1.0f, 1.0f, 1, c_1, 7005);
            check_gemm(3, 5, 6, ta, tb, 1.0f, 1.0f, -1, NULL, 7006);
            /* matrix-vector shapes */
            check_gemm(1, 300, 70, ta, tb, 0.5f, 1.0f, 1, (int64_t[]){300}, 7007);
            check_gemm(1, 37, 500, ta, tb, 1.0f, 1.0f, -1, NULL, 7008);
            check_gemm(300, 1, 70, ta, tb, 1.0f, 0.25f, 2, (int64_t[]){300, 1}, 7009);
        }
    /* big enough to be split into tiles */
    int64_t big_n[1] = {300}, big_m[2] = {257, 1};
    check_gemm(33, 300, 70, 0, 1, 1.0f, 1.0f, 1, big_n, 7010);
    check_gemm(257, 40, 64, 1, 0, 0.5f, 2.0f, 2, big_m, 7011);
    check_gemm(1, 1000, 512, 0, 1, 1.0f, 1.0f, 1, (int64_t[]){1000}, 7012);
    /* a following Relu/Clip fused by the executor */
    g_clamp.on = 1, g_clamp.lo = -0.3f, g_clamp.hi = 0.4f;
    check_gemm(3, 5, 4, 0, 1, 1.0f, 1.0f, 1, c_n, 7013);
    check_gemm(1, 300, 70, 1, 0, 0.5f, 1.0f, 1, big_n, 7014);
    check_gemm(257, 40, 64, 1, 0, 0.5f, 2.0f, 2, big_m, 7015);
    g_clamp.lo = 0.0f, g_clamp.hi = INFINITY;
    check_gemm(33, 300, 70, 0, 1, 1.0f, 1.0f, 1, big_n, 7016);
    g_clamp.on = 0;
}

static void check_matmul(int an, const int64_t *ad, int bn, const int64_t *bd, uint64_t seed)
{
    tu_rng r = {seed};
    ql_tensor *a = rand_tensor(&r, an, ad), *b = rand_tensor(&r, bn, bd);
    tnode t = tn_new("MatMul", 2, 1);
    tn_input(&t, 0, a, 0);
    tn_input(&t, 1, b, 0);
    ql_error err = {{0}};
    if (tn_prepare(&t, &err) != QL_OK)
        fail_msg("prepare: %s", err.msg);
    const ql_tensor *in[2] = {a, b};
    ql_tensor *y[1];
    run_checked(&t, in, y);
    /* expected shape: broadcast batch, then M (if a is not 1-D), N (if b is not 1-D) */
    int64_t M = an >= 2 ? ad[an - 2] : 1, K = ad[an - 1], N = bn >= 2 ? bd[bn - 1] : 1;
    int abat = an > 2 ? an - 2 : 0, bbat = bn > 2 ? bn - 2 : 0, bat = abat > bbat ? abat : bbat;
    int64_t batch[QL_MAX_DIMS], nb = 1;
    for (int i = 0; i < bat; i++) {
        int ia = i - (bat - abat), ib = i - (bat - bbat);
        int64_t da = ia >= 0 ? ad[ia] : 1, db = ib >= 0 ? bd[ib] : 1;
        batch[i] = da > db ? da : db;
        nb *= batch[i];
    }
    assert_int_equal(y[0]->ndim, bat + (an >= 2) + (bn >= 2));
    double *ref = malloc(sizeof(double) * (size_t)(nb * M * N));
    const float *av = a->data, *bv = b->data;
    for (int64_t t0 = 0; t0 < nb; t0++) {
        int64_t rem = t0, ao = 0, bo = 0, as = 1, bs = 1;
        for (int i = bat - 1; i >= 0; i--) {
            int64_t idx = rem % batch[i];
            rem /= batch[i];
            int ia = i - (bat - abat), ib = i - (bat - bbat);
            int64_t da = ia >= 0 ? ad[ia] : 1, db = ib >= 0 ? bd[ib] : 1;
            ao += (da == 1 ? 0 : idx) * as;
            bo += (db == 1 ? 0 : idx) * bs;
            as *= da;
            bs *= db;
        }
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++)
                    acc += (double)av[ao * M * K + i * K + k] * bv[bo * K * N + k * N + j];
                ref[(t0 * M + i) * N + j] = acc;
            }
    }
    expect_close(y[0], ref, nb * M * N, "MatMul");
    free(ref);
    ql_tensor_free(y[0]);
    ql_tensor_free(a);
    ql_tensor_free(b);
    tn_free(&t);
}

static void test_matmul(void **state)
{
    (void)state;
    check_matmul(2, (int64_t[]){3, 4}, 2, (int64_t[]){4, 3}, 8000);
    check_matmul(3, (int64_t[]){2, 3, 4}, 3, (int64_t[]){2, 4, 3}, 8001);
    check_matmul(4, (int64_t[]){1, 2, 3, 4}, 4, (int64_t[]){1, 2, 4, 3}, 8002);
    check_matmul(1, (int64_t[]){4}, 2, (int64_t[]){4, 3}, 8003);
    check_matmul(2, (int64_t[]){3, 4}, 1, (int64_t[]){4}, 8004);
    check_matmul(1, (int64_t[]){5}, 1, (int64_t[]){5}, 8005);
    check_matmul(4, (int64_t[]){2, 1, 3, 4}, 3, (int64_t[]){5, 4, 6}, 8006);
    check_matmul(3, (int64_t[]){7, 9, 20}, 2, (int64_t[]){20, 11}, 8007);
    check_matmul(2, (int64_t[]){4, 6}, 3, (int64_t[]){3, 6, 5}, 8008);
    check_matmul(1, (int64_t[]){6}, 3, (int64_t[]){3, 6, 5}, 8009);
    check_matmul(3, (int64_t[]){3, 5, 6}, 1, (int64_t[]){6}, 8010);
    check_matmul(2, (int64_t[]){150, 64}, 2, (int64_t[]){64, 90}, 8011);
    check_matmul(3, (int64_t[]){4, 64, 48}, 3, (int64_t[]){4, 48, 80}, 8012);
}

static void test_matmul_errors(void **state)
{
    (void)state;
    tu_rng r = {11};
    ql_tensor *a = rand_tensor(&r, 2, (int64_t[]){3, 4}), *b = rand_tensor(&r, 2, (int64_t[]){5, 2});
    ql_tensor *c = rand_tensor(&r, 3, (int64_t[]){2, 4, 2}), *d = rand_tensor(&r, 3, (int64_t[]){3, 3, 4});
    const ql_tensor *pairs[][2] = {{a, b}, {d, c}};
    const char *needles[] = {"inner", "broadcast"};
    for (int i = 0; i < 2; i++) {
        tnode t = tn_new("MatMul", 2, 1);
        tn_input(&t, 0, pairs[i][0], 0);
        tn_input(&t, 1, pairs[i][1], 0);
        ql_error err = {{0}};
        assert_int_not_equal(tn_prepare(&t, &err), QL_OK);
        if (!strstr(err.msg, needles[i]))
            fail_msg("error '%s' does not mention '%s'", err.msg, needles[i]);
        tn_free(&t);
    }
    tnode t = tn_new("Gemm", 2, 1);
    tn_input(&t, 0, a, 0);
    tn_input(&t, 1, b, 0);
    ql_error err = {{0}};
    assert_int_not_equal(tn_prepare(&t, &err), QL_OK);
    assert_non_null(strstr(err.msg, "inner"));
    tn_free(&t);
    ql_tensor_free(a);
    ql_tensor_free(b);
    ql_tensor_free(c);
    ql_tensor_free(d);
}

int main(void)
{
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1); /* as the executor does */
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_2d),
        cmocka_unit_test(test_conv_auto_pad),
        cmocka_unit_test(test_conv_big),
        cmocka_unit_test(test_conv_fused_add),
        cmocka_unit_test(test_conv_1d_3d),
        cmocka_unit_test(test_conv_errors),
        cmocka_unit_test(test_conv_transpose),
        cmocka_unit_test(test_pools),
        cmocka_unit_test(test_maxpool_indices_and_u8),
        cmocka_unit_test(test_pool_errors),
        cmocka_unit_test(test_global_pools),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
