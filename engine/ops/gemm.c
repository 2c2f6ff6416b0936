/* Gemm and MatMul on BLAS sgemm, and the packed-panel micro-kernel that
 * convolutions run on (kernels.h).
 *
 * Determinism: BLAS may pick different inner kernels for different call
 * shapes, so Gemm/MatMul split their work into tiles whose shapes depend
 * only on the problem, never on the thread count; threads just share out
 * the tiles. The micro-kernel sums each output over k in order whatever
 * the tiling, so its callers may split freely. */
#include <cblas.h>
#include <string.h>

#include "kernels.h"
#include "../pool.h"

/* ---------------------------------------------------------------------------
 * Micro-kernel: a 6 x 16 tile in 12 vector accumulators
 * ------------------------------------------------------------------------- */
int ql_cpu_fast(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int64_t ql_pack_a_floats(int64_t M, int64_t K)
{
    return (M + QL_MR - 1) / QL_MR * QL_MR * K;
}

void ql_pack_a(const float *a, int64_t lda, int64_t M, int64_t K, float *dst)
{
    int64_t kb = ql_kblock(K);
    for (int64_t pc = 0; pc < K; pc += kb)
        for (int64_t p = 0; p < M; p += QL_MR) {
            float *d = (float *)ql_pack_a_at(dst, M, K, pc, p);
            int64_t kc = K - pc < kb ? K - pc : kb;
            for (int64_t k = 0; k < kc; k++)
                for (int64_t r = 0; r < QL_MR; r++)
                    d[k * QL_MR + r] = p + r < M ? a[(p + r) * lda + pc + k] : 0.0f;
        }
}

/* The body is compiled twice (AVX2+FMA and portable) by inlining it into
 * two wrappers with different targets. Rows r >= mr of the tile are
 * computed (from zero rows of the packed A) but never loaded or stored. */
QL_INLINE void ukr_body(int64_t kc, const float *restrict a, const float *restrict b,
                        float *restrict c, int64_t ldc, int mr, const float *bias,
                        const float *add, int flags, float lo, float hi)
{
    ql_v8 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = QL_V8(0.0f);
    if (flags & QL_UKR_ACCUM) {
        c00 = QL_LD8(c), c01 = QL_LD8(c + 8);
        if (mr > 1)
            c10 = QL_LD8(c + ldc), c11 = QL_LD8(c + ldc + 8);
        if (mr > 2)
            c20 = QL_LD8(c + 2 * ldc), c21 = QL_LD8(c + 2 * ldc + 8);
        if (mr > 3)
            c30 = QL_LD8(c + 3 * ldc), c31 = QL_LD8(c + 3 * ldc + 8);
        if (mr > 4)
            c40 = QL_LD8(c + 4 * ldc), c41 = QL_LD8(c + 4 * ldc + 8);
        if (mr > 5)
            c50 = QL_LD8(c + 5 * ldc), c51 = QL_LD8(c + 5 * ldc + 8);
    } else if (bias) {
        c00 = c01 = QL_V8(bias[0]);
        if (mr > 1)
            c10 = c11 = QL_V8(bias[1]);
        if (mr > 2)
            c20 = c21 = QL_V8(bias[2]);
        if (mr > 3)
            c30 = c31 = QL_V8(bias[3]);
        if (mr > 4)
            c40 = c41 = QL_V8(bias[4]);
        if (mr > 5)
            c50 = c51 = QL_V8(bias[5]);
    }
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; k++) {
        ql_v8 b0 = *(const ql_v8 *)b, b1 = *(const ql_v8 *)(b + 8), av;
        av = QL_V8(a[0]);
        c00 += av * b0;
        c01 += av * b1;
        av = QL_V8(a[1]);
        c10 += av * b0;
        c11 += av * b1;
        av = QL_V8(a[2]);
        c20 += av * b0;
        c21 += av * b1;
        av = QL_V8(a[3]);
        c30 += av * b0;
        c31 += av * b1;
        av = QL_V8(a[4]);
        c40 += av * b0;
        c41 += av * b1;
        av = QL_V8(a[5]);
        c50 += av * b0;
        c51 += av * b1;
        a += QL_MR;
        b += QL_NR;
    }
    if (flags & QL_UKR_ADD) {
        c00 += QL_LD8(add), c01 += QL_LD8(add + 8);
        if (mr > 1)
            c10 += QL_LD8(add + ldc), c11 += QL_LD8(add + ldc + 8);
        if (mr > 2)
            c20 += QL_LD8(add + 2 * ldc), c21 += QL_LD8(add + 2 * ldc + 8);
        if (mr > 3)
            c30 += QL_LD8(add + 3 * ldc), c31 += QL_LD8(add + 3 * ldc + 8);
        if (mr > 4)
            c40 += QL_LD8(add + 4 * ldc), c41 += QL_LD8(add + 4 * ldc + 8);
        if (mr > 5)
            c50 += QL_LD8(add + 5 * ldc), c51 += QL_LD8(add + 5 * ldc + 8);
    }
    if (flags & QL_UKR_CLAMP) {
        ql_v8 l = QL_V8(lo), h = QL_V8(hi);
        c00 = QL_V8_CLAMP(c00, l, h), c01 = QL_V8_CLAMP(c01, l, h);
        c10 = QL_V8_CLAMP(c10, l, h), c11 = QL_V8_CLAMP(c11, l, h);
        c20 = QL_V8_CLAMP(c20, l, h), c21 = QL_V8_CLAMP(c21, l, h);
        c30 = QL_V8_CLAMP(c30, l, h), c31 = QL_V8_CLAMP(c31, l, h);
        c40 = QL_V8_CLAMP(c40, l, h), c41 = QL_V8_CLAMP(c41, l, h);
        c50 = QL_V8_CLAMP(c50, l, h), c51 = QL_V8_CLAMP(c51, l, h);
    }
    if (flags & QL_UKR_STREAM) {
        QL_ST8_NT(c, c00), QL_ST8_NT(c + 8, c01);
        if (mr > 1)
            QL_ST8_NT(c + ldc, c10), QL_ST8_NT(c + ldc + 8, c11);
        if (mr > 2)
            QL_ST8_NT(c + 2 * ldc, c20), QL_ST8_NT(c + 2 * ldc + 8, c21);
        if (mr > 3)
            QL_ST8_NT(c + 3 * ldc, c30), QL_ST8_NT(c + 3 * ldc + 8, c31);
        if (mr > 4)
            QL_ST8_NT(c + 4 * ldc, c40), QL_ST8_NT(c + 4 * ldc + 8, c41);
        if (mr > 5)
            QL_ST8_NT(c + 5 * ldc, c50), QL_ST8_NT(c + 5 * ldc + 8, c51);
        return;
    }
    QL_ST8(c, c00), QL_ST8(c + 8, c01);
    if (mr > 1)
        QL_ST8(c + ldc, c10), QL_ST8(c + ldc + 8, c11);
    if (mr > 2)
        QL_ST8(c + 2 * ldc, c20), QL_ST8(c + 2 * ldc + 8, c21);
    if (mr > 3)
        QL_ST8(c + 3 * ldc, c30), QL_ST8(c + 3 * ldc + 8, c31);
    if (mr > 4)
        QL_ST8(c + 4 * ldc, c40), QL_ST8(c + 4 * ldc + 8, c41);
    if (mr > 5)
        QL_ST8(c + 5 * ldc, c50), QL_ST8(c + 5 * ldc + 8, c51);
}

QL_TARGET_FAST static void ukr_fast(int64_t kc, const float *a, const float *b, float *c,
                                    int64_t ldc, int mr, const float *bias, const float *add,
                                    int flags, float lo, float hi)
{
    ukr_body(kc, a, b, c, ldc, mr, bias, add, flags, lo, hi);
}

static void ukr_portable(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int mr,
                         const float *bias, const float *add, int flags, float lo, float hi)
{
    ukr_body(kc, a, b, c, ldc, mr, bias, add, flags, lo, hi);
}

/* The 6 x 8 kernel for a last tile of at most 8 columns: two sets of six
 * accumulators (even and odd k) keep the FMA pipes busy, summed at the
 * end; B tiles are 8 floats wide. */
QL_INLINE void ukr8_body(int64_t kc, const float *restrict a, const float *restrict b,
                         float *restrict c, int64_t ldc, int mr, const float *bias,
                         const float *add, int flags, float lo, float hi)
{
    ql_v8 c0, c1, c2, c3, c4, c5, d0, d1, d2, d3, d4, d5;
    c0 = c1 = c2 = c3 = c4 = c5 = d0 = d1 = d2 = d3 = d4 = d5 = QL_V8(0.0f);
    if (flags & QL_UKR_ACCUM) {
        c0 = QL_LD8(c);
        if (mr > 1)
            c1 = QL_LD8(c + ldc);
        if (mr > 2)
            c2 = QL_LD8(c + 2 * ldc);
        if (mr > 3)
            c3 = QL_LD8(c + 3 * ldc);
        if (mr > 4)
            c4 = QL_LD8(c + 4 * ldc);
        if (mr > 5)
            c5 = QL_LD8(c + 5 * ldc);
    } else if (bias) {
        c0 = QL_V8(bias[0]);
        if (mr > 1)
            c1 = QL_V8(bias[1]);
        if (mr > 2)
            c2 = QL_V8(bias[2]);
        if (mr > 3)
            c3 = QL_V8(bias[3]);
        if (mr > 4)
            c4 = QL_V8(bias[4]);
        if (mr > 5)
            c5 = QL_V8(bias[5]);
    }
    int64_t k = 0;
    for (; k + 1 < kc; k += 2) {
        ql_v8 b0 = *(const ql_v8 *)b, b1 = *(const ql_v8 *)(b + 8);
        c0 += QL_V8(a[0]) * b0, d0 += QL_V8(a[6]) * b1;
        c1 += QL_V8(a[1]) * b0, d1 += QL_V8(a[7]) * b1;
        c2 += QL_V8(a[2]) * b0, d2 += QL_V8(a[8]) * b1;
        c3 += QL_V8(a[3]) * b0, d3 += QL_V8(a[9]) * b1;
        c4 += QL_V8(a[4]) * b0, d4 += QL_V8(a[10]) * b1;
        c5 += QL_V8(a[5]) * b0, d5 += QL_V8(a[11]) * b1;
        a += 2 * QL_MR;
        b += 16;
    }
    if (k < kc) {
        ql_v8 b0 = *(const ql_v8 *)b;
        c0 += QL_V8(a[0]) * b0, c1 += QL_V8(a[1]) * b0, c2 += QL_V8(a[2]) * b0;
        c3 += QL_V8(a[3]) * b0, c4 += QL_V8(a[4]) * b0, c5 += QL_V8(a[5]) * b0;
    }
    c0 += d0, c1 += d1, c2 += d2, c3 += d3, c4 += d4, c5 += d5;
    if (flags & QL_UKR_ADD) {
        c0 += QL_LD8(add);
        if (mr > 1)
            c1 += QL_LD8(add + ldc);
        if (mr > 2)
            c2 += QL_LD8(add + 2 * ldc);
        if (mr > 3)
            c3 += QL_LD8(add + 3 * ldc);
        if (mr > 4)
            c4 += QL_LD8(add + 4 * ldc);
        if (mr > 5)
            c5 += QL_LD8(add + 5 * ldc);
    }
    if (flags & QL_UKR_CLAMP) {
        ql_v8 l = QL_V8(lo), h = QL_V8(hi);
        c0 = QL_V8_CLAMP(c0, l, h), c1 = QL_V8_CLAMP(c1, l, h), c2 = QL_V8_CLAMP(c2, l, h);
        c3 = QL_V8_CLAMP(c3, l, h), c4 = QL_V8_CLAMP(c4, l, h), c5 = QL_V8_CLAMP(c5, l, h);
    }
    QL_ST8(c, c0);
    if (mr > 1)
        QL_ST8(c + ldc, c1);
    if (mr > 2)
        QL_ST8(c + 2 * ldc, c2);
    if (mr > 3)
        QL_ST8(c + 3 * ldc, c3);
    if (mr > 4)
        QL_ST8(c + 4 * ldc, c4);
    if (mr > 5)
        QL_ST8(c + 5 * ldc, c5);
}

QL_TARGET_FAST static void ukr8_fast(int64_t kc, const float *a, const float *b, float *c,
                                     int64_t ldc, int mr, const float *bias, const float *add,
                                     int flags, float lo, float hi)
{
    ukr8_body(kc, a, b, c, ldc, mr, bias, add, flags, lo, hi);
}

static void ukr8_portable(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                          int mr, const float *bias, const float *add, int flags, float lo,
                          float hi)
{
    ukr8_body(kc, a, b, c, ldc, mr, bias, add, flags, lo, hi);
}

ql_ukr_fn ql_ukr_select(void) { return ql_cpu_fast() ? ukr_fast : ukr_portable; }
ql_ukr_fn ql_ukr8_select(void) { return ql_cpu_fast() ? ukr8_fast : ukr8_portable; }

void ql_ukr_partial(ql_ukr_fn fn, int width, int64_t kc, const float *a, const float *b, float *c,
                    int64_t ldc, int mr, int nr, const float *bias, const float *add, int flags,
                    float lo, float hi)
{
    if (nr == width) {
        fn(kc, a, b, c, ldc, mr, bias, add, flags, lo, hi);
        return;
    }
    /* a tile cut short on the right goes through a full-width buffer */
    float buf[QL_MR * QL_NR] __attribute__((aligned(32)));
    flags &= ~QL_UKR_STREAM;
    if (flags & QL_UKR_ACCUM)
        for (int r = 0; r < mr; r++)
            memcpy(buf + r * QL_NR, c + r * ldc, (size_t)nr * sizeof *buf);
    if (!(flags & QL_UKR_ADD)) {
        fn(kc, a, b, buf, QL_NR, mr, bias, NULL, flags, lo, hi);
        for (int r = 0; r < mr; r++)
            memcpy(c + r * ldc, buf + r * QL_NR, (size_t)nr * sizeof *buf);
        return;
    }
    /* the addend has the stride of c: add (then clamp) on the way out */
    fn(kc, a, b, buf, QL_NR, mr, bias, NULL, flags & ~(QL_UKR_ADD | QL_UKR_CLAMP), lo, hi);
    for (int r = 0; r < mr; r++)
        for (int i = 0; i < nr; i++) {
            float v = buf[r * QL_NR + i] + add[r * ldc + i];
            if (flags & QL_UKR_CLAMP) {
                v = v < lo ? lo : v; /* NaN passes through, as in the kernels */
                v = v > hi ? hi : v;
            }
            c[r * ldc + i] = v;
        }
}

/* ---------------------------------------------------------------------------
 * sgemm in thread-independent tiles
 * ------------------------------------------------------------------------- */
typedef struct sgemm_job {
    int ta, tb, by_rows, gemv;
    ql_act act; /* fused Relu/Clip, applied to each tile as it is done */
    int64_t M, N, K, lda, ldb, ldc, tile;
    float alpha, beta;
    const float *a, *b;
    float *c;
} sgemm_job;

/* One tile of a matrix-vector product (M == 1 or N == 1): gemv reads the
 * matrix once instead of packing it. */
static void gemv_tile(const sgemm_job *j, int64_t lo, int64_t hi)
{
    if (j->beta == 0.0f) /* never let 0 * (stale NaN) through */
        for (int64_t i = lo; i < hi; i++)
            j->c[j->M == 1 ? i : i * j->ldc] = 0.0f;
    if (j->M == 1) { /* c[lo..hi) = alpha * a op(B)[:, lo..hi) + beta * c */
        if (j->tb) /* B is N x K: rows lo..hi dotted with a */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)(hi - lo), (int)j->K, j->alpha,
                        j->b + lo * j->ldb, (int)j->ldb, j->a, j->ta ? (int)j->lda : 1, j->beta,
                        j->c + lo, 1);
        else /* B is K x N: columns lo..hi */
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)j->K, (int)(hi - lo), j->alpha, j->b + lo,
                        (int)j->ldb, j->a, j->ta ? (int)j->lda : 1, j->beta, j->c + lo, 1);
    } else { /* N == 1: c[lo..hi) rows of op(A) dotted with b */
        if (j->ta) /* A is K x M */
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)j->K, (int)(hi - lo), j->alpha, j->a + lo,
                        (int)j->lda, j->b, j->tb ? 1 : (int)j->ldb, j->beta, j->c + lo * j->ldc,
                        (int)j->ldc);
        else
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)(hi - lo), (int)j->K, j->alpha,
                        j->a + lo * j->lda, (int)j->lda, j->b, j->tb ? 1 : (int)j->ldb, j->beta,
                        j->c + lo * j->ldc, (int)j->ldc);
    }
}

static void sgemm_tile(const sgemm_job *j, int64_t lo, int64_t hi)
{
    const float *a = j->a, *b = j->b;
    float *c = j->c;
    int64_t M = j->M, N = j->N;
    if (j->by_rows) {
        a += j->ta ? lo : lo * j->lda;
        c += lo * j->ldc;
        M = hi - lo;
    } else {
        b += j->tb ? lo * j->ldb : lo;
        c += lo;
        N = hi - lo;
    }
    cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)j->K, j->alpha, a, (int)j->lda, b, (int)j->ldb, j->beta, c,
                (int)j->ldc);
}

static void clamp_rect(float *c, int64_t ldc, int64_t rows, int64_t cols, float lo, float hi)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t k = 0; k < cols; k++) {
            float v = c[i * ldc + k];
            v = v < lo ? lo : v; /* NaN passes through, as Relu/Clip */
            c[i * ldc + k] = v > hi ? hi : v;
        }
}

static void sgemm_tiles(void *arg, int64_t begin, int64_t end, int tid)
{
    const sgemm_job *j = arg;
    (void)tid;
    for (int64_t t = begin; t < end; t++) {
        int64_t lo = t * j->tile, n = j->by_rows ? j->M : j->N;
        int64_t hi = lo + j->tile < n ? lo + j->tile : n;
        if (j->gemv)
            gemv_tile(j, lo, hi);
        else
            sgemm_tile(j, lo, hi);
        if (j->act.on) {
            if (j->by_rows)
                clamp_rect(j->c + lo * j->ldc, j->ldc, hi - lo, j->N, j->act.lo, j->act.hi);
            else
                clamp_rect(j->c + lo, j->ldc, j->M, hi - lo, j->act.lo, j->act.hi);
        }
    }
}

/* c = alpha * op(a) op(b) + beta * c, tiled over the longer of rows and
 * columns into at most 8 tiles sized from the shape alone. */
static void sgemm_run(ql_exec_ctx *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K,
                      float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                      float beta, float *c, int64_t ldc, const ql_act *act)
{
    sgemm_job j = {.ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb,
                   .ldc = ldc, .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c};
    if (act)
        j.act = *act;
    if (M == 0 || N == 0)
        return;
    j.by_rows = M > N;
    j.gemv = M == 1 || N == 1;
    int64_t n = j.by_rows ? M : N, min_tile = j.by_rows ? 16 : 64;
    j.tile = (n + 7) / 8;
    j.tile = (j.tile + 15) / 16 * 16;
    if (j.tile < min_tile)
        j.tile = min_tile;
    if (M * N * K < 256 * 1024)
        j.tile = n; /* too small to be worth splitting */
    ql_parallel_for(ctx, (n + j.tile - 1) / j.tile, 1, sgemm_tiles, &j);
}

/* ---------------------------------------------------------------------------
 * Gemm: Y = alpha * op(A) op(B) + beta * C
 * ------------------------------------------------------------------------- */
static ql_status gemm_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_error *err)
{
    const ql_tensor *a = in[0], *b = n->n_in > 1 ? in[1] : NULL, *c = n->n_in > 2 ? in[2] : NULL;
    if (!a || !b)
        return ql_fail(err, QL_ERR_ARG, "Gemm needs inputs A and B");
    int ta = ql_attr_int(n, "transA", 0) != 0, tb = ql_attr_int(n, "transB", 0) != 0;
    if ((a->ndim >= 0 && a->ndim != 2) || (b->ndim >= 0 && b->ndim != 2))
        return ql_fail(err, QL_ERR_SHAPE, "Gemm needs 2-D A and B (got ranks %d and %d)", a->ndim,
                       b->ndim);
    int64_t M = a->ndim < 0 ? -1 : a->dims[ta ? 1 : 0], Ka = a->ndim < 0 ? -1 : a->dims[ta ? 0 : 1];
    int64_t Kb = b->ndim < 0 ? -1 : b->dims[tb ? 1 : 0], N = b->ndim < 0 ? -1 : b->dims[tb ? 0 : 1];
    if (Ka >= 0 && Kb >= 0 && Ka != Kb)
        return ql_fail(err, QL_ERR_SHAPE, "Gemm inner dimensions differ (A gives %lld, B %lld)",
                       (long long)Ka, (long long)Kb);
    if (c && c->ndim >= 0) {
        if (c->ndim > 2)
            return ql_fail(err, QL_ERR_SHAPE, "Gemm C has rank %d (at most 2)", c->ndim);
        int64_t want[2] = {M, N};
        for (int i = 0; i < c->ndim; i++) {
            int64_t cd = c->dims[c->ndim - 1 - i], od = want[1 - i];
            if (cd >= 0 && od >= 0 && cd != 1 && cd != od)
                return ql_fail(err, QL_ERR_SHAPE,
                               "Gemm C does not broadcast to [%lldx%lld]", (long long)M,
                               (long long)N);
        }
    }
    out[0]->dtype = QL_F32;
    out[0]->ndim = 2;
    out[0]->dims[0] = M;
    out[0]->dims[1] = N;
    return QL_OK;
}

static ql_status gemm_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                          ql_exec_ctx *ctx, ql_error *err)
{
    const ql_tensor *a = in[0], *b = in[1], *c = n->n_in > 2 ? in[2] : NULL;
    ql_tensor *y = out[0];
    if (a->dtype != QL_F32 || b->dtype != QL_F32 || (c && c->dtype != QL_F32))
        return ql_fail(err, QL_ERR_UNSUPPORTED, "Gemm runs on f32 tensors only");
    int ta = ql_attr_int(n, "transA", 0) != 0, tb = ql_attr_int(n, "transB", 0) != 0;
    float alpha = ql_attr_float(n, "alpha", 1.0f), beta = ql_attr_float(n, "beta", 1.0f);
    int64_t M = y->dims[0], N = y->dims[1], K = a->dims[ta ? 0 : 1];
    float *yd = y->data;
    float gbeta = 0.0f;
    if (M == 0 || N == 0)
        return QL_OK;
    if (c && beta != 0.0f) {
        /* Y starts as beta * C broadcast, then sgemm accumulates onto it */
        const float *cd = c->data;
        int64_t cm = c->ndim == 2 ? c->dims[0] : 1, cn = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;
        for (int64_t i = 0; i < M; i++) {
            const float *cr = cd + (cm == 1 ? 0 : i) * cn;
            float *yr = yd + i * N;
            if (cn == 1)
                for (int64_t k = 0; k < N; k++)
                    yr[k] = beta * cr[0];
            else
                for (int64_t k = 0; k < N; k++)
                    yr[k] = beta * cr[k];
        }
        gbeta = 1.0f;
    }
    /* the executor may ask for a following Relu/Clip to be applied here */
    ql_act act = {ctx->post_clamp, ctx->post_lo, ctx->post_hi};
    if (K == 0 || alpha == 0.0f) {
        if (gbeta == 0.0f)
            memset(yd, 0, (size_t)(M * N) * sizeof *yd);
        if (act.on)
            clamp_rect(yd, N, M, N, act.lo, act.hi);
        return QL_OK;
    }
    sgemm_run(ctx, ta, tb, M, N, K, alpha, a->data, a->dims[1], b->data, b->dims[1], gbeta, yd, N,
              &act);
    (void)err;
    return QL_OK;
}

/* ---------------------------------------------------------------------------
 * MatMul: numpy semantics, batch dimensions broadcast, 1-D operands
 * promoted and their unit dimension dropped from the result
 * ------------------------------------------------------------------------- */
static ql_status matmul_infer(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                              ql_error *err)
{
    const ql_tensor *a = in[0], *b = n->n_in > 1 ? in[1] : NULL;
    if (!a || !b)
        return ql_fail(err, QL_ERR_ARG, "MatMul needs two inputs");
    out[0]->dtype = QL_F32;
    if (a->ndim < 0 || b->ndim < 0) {
        out[0]->ndim = -1;
        return QL_OK;
    }
    if (a->ndim < 1 || b->ndim < 1)
        return ql_fail(err, QL_ERR_SHAPE, "MatMul needs operands of rank 1 or more");
    int an = a->ndim, bn = b->ndim;
    int64_t K1 = a->dims[an - 1], K2 = bn >= 2 ? b->dims[bn - 2] : b->dims[0];
    if (K1 >= 0 && K2 >= 0 && K1 != K2)
        return ql_fail(err, QL_ERR_SHAPE, "MatMul inner dimensions differ (%lld vs %lld)",
                       (long long)K1, (long long)K2);
    int bat;
    int64_t batch[QL_MAX_DIMS];
    if (!ql_broadcast_shape(an > 2 ? an - 2 : 0, a->dims, bn > 2 ? bn - 2 : 0, b->dims, &bat,
                            batch))
        return ql_fail(err, QL_ERR_SHAPE, "MatMul batch dimensions do not broadcast");
    int k = 0;
    for (int i = 0; i < bat; i++)
        out[0]->dims[k++] = batch[i];
    if (an >= 2)
        out[0]->dims[k++] = a->dims[an - 2];
    if (bn >= 2)
        out[0]->dims[k++] = b->dims[bn - 1];
    out[0]->ndim = k;
    return QL_OK;
}

typedef struct matmul_job {
    const float *a, *b;
    float *y;
    int64_t M, N, K;
    int bat;
    int64_t bdims[QL_MAX_DIMS], astr[QL_MAX_DIMS], bstr[QL_MAX_DIMS];
} matmul_job;

static void matmul_batches(void *arg, int64_t begin, int64_t end, int tid)
{
    const matmul_job *j = arg;
    (void)tid;
    for (int64_t t = begin; t < end; t++) {
        int64_t rem = t, ao = 0, bo = 0;
        for (int i = j->bat - 1; i >= 0; i--) {
            int64_t idx = rem % j->bdims[i];
            rem /= j->bdims[i];
            ao += idx * j->astr[i];
            bo += idx * j->bstr[i];
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)j->M, (int)j->N, (int)j->K,
                    1.0f, j->a + ao * j->M * j->K, (int)j->K, j->b + bo * j->K * j->N, (int)j->N,
                    0.0f, j->y + t * j->M * j->N, (int)j->N);
    }
}

static ql_status matmul_run(const ql_node *n, const ql_tensor *const *in, ql_tensor *const *out,
                            ql_exec_ctx *ctx, ql_error *err)
{
    (void)n;
    const ql_tensor *a = in[0], *b = in[1];
    if (a->dtype != QL_F32 || b->dtype != QL_F32)
        return ql_fail(err, QL_ERR_UNSUPPORTED, "MatMul runs on f32 tensors only");
    int an = a->ndim, bn = b->ndim;
    matmul_job j = {.a = a->data, .b = b->data, .y = out[0]->data};
    j.K = a->dims[an - 1];
    j.M = an >= 2 ? a->dims[an - 2] : 1;
    j.N = bn >= 2 ? b->dims[bn - 1] : 1;
    int abat = an > 2 ? an - 2 : 0, bbat = bn > 2 ? bn - 2 : 0;
    j.bat = abat > bbat ? abat : bbat;
    int64_t nbatch = 1, as = 1, bs = 1, a_batches = 1;
    int b_shared = 1; /* b has no batch extent: fold a's batches into rows */
    for (int i = j.bat - 1; i >= 0; i--) {
        int ia = i - (j.bat - abat), ib = i - (j.bat - bbat);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        j.bdims[i] = da > db ? da : db;
        j.astr[i] = da == 1 ? 0 : as;
        j.bstr[i] = db == 1 ? 0 : bs;
        as *= da;
        bs *= db;
        a_batches *= da;
        nbatch *= j.bdims[i];
        if (db != 1)
            b_shared = 0;
    }
    if (ql_tensor_numel(out[0]) == 0)
        return QL_OK;
    if (j.K == 0) {
        memset(out[0]->data, 0, ql_tensor_nbytes(out[0]));
        return QL_OK;
    }
    if (nbatch == 1 || (b_shared && a_batches == nbatch)) {
        /* one matrix product: [nbatch*M x K] x [K x N] */
        sgemm_run(ctx, 0, 0, nbatch * j.M, j.N, j.K, 1.0f, j.a, j.K, j.b, j.N, 0.0f, j.y, j.N,
                  NULL);
        return QL_OK;
    }
    ql_parallel_for(ctx, nbatch, 1, matmul_batches, &j);
    (void)err;
    return QL_OK;
}

const ql_op_def ql_op_def_GEMM = {
    .name = "Gemm", .since_version = 1, .infer = gemm_infer, .run_f32 = gemm_run,
    .fuses_clamp = true, QL_IO(2, 3, 1, 1), /* C optional from opset 11 */
};
const ql_op_def ql_op_def_MATMUL = {
    .name = "MatMul", .since_version = 1, .infer = matmul_infer, .run_f32 = matmul_run,
    QL_IO(2, 2, 1, 1),
};
