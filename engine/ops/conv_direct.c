/* Direct convolution for few channels (kernels.h, used by ops/conv.c).
 *
 * Why it exists: with 16-32 channels the packed GEMM path spends most of
 * its time moving data (packing B tiles, copying the column buffer to y
 * because padded rows are computed wq wide) rather than in its
 * micro-kernel. Here each task builds the phase-plane rows of one band of
 * output rows once (in cache) and computes output rows straight into y:
 * a tile of MB output channels x NB 8-wide column vectors sits in
 * registers while k = (input channel, tap) runs over the packed weights.
 * A row of OW >= 8 outputs is covered by vectors at 8i, the last one moved
 * back to OW - 8 (it recomputes a few outputs, with the same bits, instead
 * of masking). Rows shorter than 8 (late, small layers) use the transposed
 * tile instead: 16 output channels (two vectors) x 6 output pixels, the
 * input broadcast, transposed in registers to be stored; so do convs of 16
 * or 32 output channels with at least 64 terms per output, whose inner
 * loop it runs with 12 accumulators and no loads split across cache lines
 * (the row tile's 8 fall short of hiding the multiply-add latency), for
 * 15-25% less time on the example at batch 32. Every output is bias +
 * its k terms in order, then the fused residual add, then the clamp,
 * whatever the band split or thread count. */
#include <string.h>

#include "kernels.h"
#include "../pool.h"

#define DC_MAX_MB 6
#define DC_MAX_NB 4
#define DC_MAX_REGS 16                       /* accumulators + NB inputs + 1 weight */
/* Channel limits (input and output), measured against the GEMM path: rows
 * of 8 or more lose at 64 channels (the GEMM overheads are shared by more
 * rows there); short rows gain up to 64. 1x1 kernels (K = C, few steps per
 * tile) measured slower here, so they stay with GEMM too, except strided
 * ones with short rows (GEMM would build all stride^2 phase planes to read
 * one; here 0.25 -> 0.11-0.17 ms for the example's shortcuts at batch 32). */
#define DC_MAX_CH_ROWS 32
#define DC_MAX_CH_SHORT 64
#define DC_PLANE_BYTES ((int64_t)96 << 10)   /* plane rows one task holds (L2) */
#define DC_MAX_CHUNKS 64                     /* column chunks per row: rows up to 2048 */

typedef void (*dc_fn)(int64_t K, const float *wp, const float *src, const int64_t *koff,
                      int64_t last, float *y, int64_t ystride, const float *add,
                      const float *bias, ql_act act);

/* The MB x NB tile: y rows at y + r*ystride (r < MB), vectors at column
 * 8v (v < NB-1) and `last`; input vector v of step k at src + koff[k] +
 * the same column; weights wp[k*MB + r]. The add is read before any store,
 * so it may overlap y. MB and NB are constants in every instance. */
QL_INLINE void dc_body(const int MB, const int NB, int64_t K, const float *restrict wp,
                       const float *restrict src, const int64_t *restrict koff, int64_t last,
                       float *y, int64_t ystride, const float *add, const float *bias, ql_act act)
{
    ql_v8 acc[DC_MAX_MB][DC_MAX_NB];
#pragma GCC unroll 8
    for (int r = 0; r < MB; r++)
#pragma GCC unroll 8
        for (int v = 0; v < NB; v++)
            acc[r][v] = QL_V8(bias ? bias[r] : 0.0f);
    for (int64_t k = 0; k < K; k++) {
        const float *p = src + koff[k];
        ql_v8 xv[DC_MAX_NB];
#pragma GCC unroll 8
        for (int v = 0; v < NB; v++)
            xv[v] = QL_LD8(p + (v == NB - 1 ? last : 8 * v));
#pragma GCC unroll 8
        for (int r = 0; r < MB; r++) {
            ql_v8 wv = QL_V8(wp[r]);
#pragma GCC unroll 8
            for (int v = 0; v < NB; v++)
                acc[r][v] += wv * xv[v];
        }
        wp += MB;
    }
    if (add)
#pragma GCC unroll 8
        for (int r = 0; r < MB; r++)
#pragma GCC unroll 8
            for (int v = 0; v < NB; v++)
                acc[r][v] += QL_LD8(add + r * ystride + (v == NB - 1 ? last : 8 * v));
    if (act.on) {
        ql_v8 lo = QL_V8(act.lo), hi = QL_V8(act.hi);
#pragma GCC unroll 8
        for (int r = 0; r < MB; r++)
#pragma GCC unroll 8
            for (int v = 0; v < NB; v++)
                acc[r][v] = QL_V8_CLAMP(acc[r][v], lo, hi);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MB; r++)
#pragma GCC unroll 8
        for (int v = 0; v < NB; v++)
            QL_ST8(y + r * ystride + (v == NB - 1 ? last : 8 * v), acc[r][v]);
}

#define DC_ARGS                                                                               \
    int64_t K, const float *wp, const float *src, const int64_t *koff, int64_t last, float *y, \
        int64_t ystride, const float *add, const float *bias, ql_act act
#define DC_PASS K, wp, src, koff, last, y, ystride, add, bias, act
#define DC_PAIR(mb, nb)                                                                     \
    QL_TARGET_FAST static void dc_fast_##mb##_##nb(DC_ARGS) { dc_body(mb, nb, DC_PASS); } \
    static void dc_port_##mb##_##nb(DC_ARGS) { dc_body(mb, nb, DC_PASS); }
#define DC_ROW(mb) DC_PAIR(mb, 1) DC_PAIR(mb, 2)
DC_ROW(1) DC_ROW(2) DC_ROW(3) DC_ROW(4) DC_ROW(5) DC_ROW(6)
DC_PAIR(1, 3) DC_PAIR(2, 3) DC_PAIR(3, 3) DC_PAIR(4, 3)
DC_PAIR(1, 4) DC_PAIR(2, 4)

/* [fast][MB][NB]; NULL where the tile would not fit in the registers */
static const dc_fn dc_table[2][DC_MAX_MB + 1][DC_MAX_NB + 1] = {
    {{0},
     {0, dc_port_1_1, dc_port_1_2, dc_port_1_3, dc_port_1_4},
     {0, dc_port_2_1, dc_port_2_2, dc_port_2_3, dc_port_2_4},
     {0, dc_port_3_1, dc_port_3_2, dc_port_3_3, 0},
     {0, dc_port_4_1, dc_port_4_2, dc_port_4_3, 0},
     {0, dc_port_5_1, dc_port_5_2, 0, 0},
     {0, dc_port_6_1, dc_port_6_2, 0, 0}},
    {{0},
     {0, dc_fast_1_1, dc_fast_1_2, dc_fast_1_3, dc_fast_1_4},
     {0, dc_fast_2_1, dc_fast_2_2, dc_fast_2_3, dc_fast_2_4},
     {0, dc_fast_3_1, dc_fast_3_2, dc_fast_3_3, 0},
     {0, dc_fast_4_1, dc_fast_4_2, dc_fast_4_3, 0},
     {0, dc_fast_5_1, dc_fast_5_2, 0, 0},
     {0, dc_fast_6_1, dc_fast_6_2, 0, 0}},
};

/* The transposed tile: CV_P pixels (plane offsets pix[p]) x 16 channels;
 * weights wp[k*16 + l], bias16 has 16 entries. The epilogue transposes
 * the sums to per-channel rows of pixels in registers and finishes them
 * as vectors: output channel l's np pixels go to y + l*ystride (+ add at
 * the same offsets, then the clamp), for the mn channels that exist. With
 * wide, whole vectors are read from add and stored: the two pixels past
 * np = CV_P are overwritten by the next tile (the caller's promise that it
 * holds them, and that add does not overlap y). */
#define CV_P 6
#define CV_M 16

QL_INLINE void cv_body(int64_t K, const float *restrict wp, const float *restrict src,
                       const int64_t *restrict koff, const int64_t *pix, const float *bias16,
                       float *y, int64_t ystride, const float *add, int64_t mn, int64_t np,
                       int wide, ql_act act)
{
    ql_v8 acc[CV_P][2];
    const float *sp[CV_P];
#pragma GCC unroll 8
    for (int p = 0; p < CV_P; p++) {
        acc[p][0] = QL_LD8(bias16), acc[p][1] = QL_LD8(bias16 + 8);
        sp[p] = src + pix[p];
    }
    for (int64_t k = 0; k < K; k++) {
        int64_t o = koff[k];
        ql_v8 w0 = QL_LD8(wp), w1 = QL_LD8(wp + 8);
#pragma GCC unroll 8
        for (int p = 0; p < CV_P; p++) {
            ql_v8 xb = QL_V8(sp[p][o]);
            acc[p][0] += xb * w0, acc[p][1] += xb * w1;
        }
        wp += CV_M;
    }
    ql_v8 lo = QL_V8(act.lo), hi = QL_V8(act.hi);
    for (int h = 0; h < 2; h++) {
        ql_v8 r[8];
#pragma GCC unroll 8
        for (int p = 0; p < 8; p++)
            r[p] = acc[p < CV_P ? p : CV_P - 1][h];
        ql_transpose8(r);
        for (int c = 0; c < 8 && 8 * h + c < mn; c++) {
            int64_t off = (8 * h + c) * ystride;
            ql_v8 v = r[c];
            if (add && wide)
                v += QL_LD8(add + off);
            else if (add)
                ql_add_n(&v, add + off, np);
            if (act.on)
                v = QL_V8_CLAMP(v, lo, hi);
            if (wide)
                QL_ST8(y + off, v);
            else
                ql_store_n(y + off, v, np);
        }
    }
}

#define CV_ARGS                                                                         \
    int64_t K, const float *wp, const float *src, const int64_t *koff, const int64_t *pix, \
        const float *bias16, float *y, int64_t ystride, const float *add, int64_t mn,     \
        int64_t np, int wide, ql_act act
#define CV_PASS K, wp, src, koff, pix, bias16, y, ystride, add, mn, np, wide, act

QL_TARGET_FAST static void cv_fast(CV_ARGS) { cv_body(CV_PASS); }

static void cv_port(CV_ARGS) { cv_body(CV_PASS); }

/* Estimated cycles of one k step of an mb x nb tile: FMAs on two pipes,
 * at least the FMA latency (4) per step, loads on two ports. */
static double dc_cost(int mb, int nb)
{
    double fma = mb * nb / 2.0, lat = 4.0, ld = (mb + nb + 1) / 2.0;
    double c = fma > lat ? fma : lat;
    return c > ld ? c : ld;
}

/* The rows per tile for tiles nb vectors wide over M channels: the
 * cheapest blocking (ties to taller tiles, which read the input less). */
static int dc_pick_mb(int64_t M, int nb)
{
    int best = 1;
    double best_cost = 0;
    for (int mb = 1; mb <= DC_MAX_MB && mb * nb + nb + 1 <= DC_MAX_REGS; mb++) {
        double c = (double)(M / mb) * dc_cost(mb, nb) + (M % mb ? dc_cost((int)(M % mb), nb) : 0);
        if (mb == 1 || c <= best_cost)
            best = mb, best_cost = c;
    }
    return best;
}

/* The packed weights' layout for d: tile height and kind (see dc_job.wp). */
static void dc_layout(const ql_dconv *d, int *mb, int *cv)
{
    int64_t nv = (d->ow + 7) / 8, nchunks = (nv + DC_MAX_NB - 1) / DC_MAX_NB;
    *cv = d->ow < 8 || (d->M % CV_M == 0 && d->C * d->kh * d->kw >= 64);
    *mb = *cv ? CV_M : dc_pick_mb(d->M, (int)((nv + nchunks - 1) / nchunks));
}

int64_t ql_conv_direct_layout(const ql_dconv *d)
{
    int mb, cv;
    dc_layout(d, &mb, &cv);
    return 2 * (int64_t)mb + cv;
}

static size_t dc_align16(int64_t floats) { return (size_t)((floats + 15) / 16 * 16); }

int64_t ql_conv_direct_packed_floats(const ql_dconv *d)
{
    int64_t mpad = (d->M + CV_M - 1) / CV_M * CV_M;
    return (int64_t)dc_align16(mpad * d->C * d->kh * d->kw);
}

void ql_conv_direct_pack(const ql_dconv *d, const float *w, float *wp)
{
    int mb, cv;
    dc_layout(d, &mb, &cv);
    int64_t K = d->C * d->kh * d->kw;
    for (int64_t m0 = 0; m0 < d->M; m0 += mb) {
        int64_t r = d->M - m0 < mb ? d->M - m0 : mb, rp = cv ? CV_M : r;
        for (int64_t k = 0; k < K; k++)
            for (int64_t rr = 0; rr < rp; rr++)
                wp[m0 * K + k * rp + rr] = rr < r ? w[(m0 + rr) * K + k] : 0.0f;
    }
}

int ql_conv_direct_fits(const ql_dconv *d)
{
    int64_t maxch = d->ow < 8 ? DC_MAX_CH_SHORT : DC_MAX_CH_ROWS;
    /* 1x1 kernels only where GEMM would first build phase planes: strided,
     * rows short enough for the transposed tiles (which read the pixels
     * they need from plain rows) */
    int taps = d->kh * d->kw > 1 || (d->ow < 8 && (d->sh > 1 || d->sw > 1));
    return d->C >= 1 && d->C <= maxch && d->M >= 1 && d->M <= maxch && taps &&
           d->ow >= 1 && d->ow <= 8 * DC_MAX_NB * DC_MAX_CHUNKS && d->oh >= 1 &&
           d->N * d->M * d->oh * d->ow * (int64_t)sizeof(float) <= QL_STREAM_BYTES;
}

typedef struct dc_job {
    ql_dconv d;
    ql_act act;
    const float *x, *bias, *add;
    float *y;
    int cv;            /* transposed tiles (rows shorter than a vector) */
    int add_apart;     /* no add, or one that does not overlap y */
    const float *wp;   /* packed weights: block at m0*K, element (k, r) at k*mb + r
                        * (cv: block of 16 at m0*K, element (k, l) at k*16 + l) */
    const float *bias16; /* cv: the bias padded to whole blocks of 16 (zeros) */
    const int64_t *koff;
    ql_phase ph;
    int64_t K, band, nbands, lrows, chan_stride;
    int rows;          /* input as padded image rows (stride 1, or transposed tiles,
                        * which read any pixel), else as phase planes */
    int64_t wq;        /* floats per row of that layout */
    int mb;            /* rows per tile (the last tile may have fewer) */
    int64_t nchunks, col0[DC_MAX_CHUNKS], nbv[DC_MAX_CHUNKS], last[DC_MAX_CHUNKS];
    float *scratch;
    int64_t per_thread;
    int fast;
} dc_job;

/* Output rows [o0, o1) of image img, tiles of mb rows x up to 4 vectors,
 * stored straight into y. */
static void dc_band_rows(const dc_job *j, const float *pl, int64_t img, int64_t o0, int64_t o1)
{
    const ql_dconv *d = &j->d;
    int64_t OHW = d->oh * d->ow;
    for (int64_t oh = o0; oh < o1; oh++) {
        const float *row = pl + (oh - o0) * j->wq;
        int64_t yrow = img * d->M * OHW + oh * d->ow;
        for (int64_t ci = 0; ci < j->nchunks; ci++) {
            int nb = (int)j->nbv[ci];
            int64_t col = j->col0[ci];
            for (int64_t m0 = 0; m0 < d->M; m0 += j->mb) {
                int r = d->M - m0 < j->mb ? (int)(d->M - m0) : j->mb;
                int64_t yo = yrow + m0 * OHW + col;
                dc_table[j->fast][r][nb](j->K, j->wp + m0 * j->K, row + col, j->koff,
                                         j->last[ci], j->y + yo, OHW,
                                         j->add ? j->add + yo : NULL,
                                         j->bias ? j->bias + m0 : NULL, j->act);
            }
        }
    }
}

/* The same band in transposed tiles of 6 pixels x 16 channels; a last
 * short tile repeats its last pixel and stores only its own. */
static void dc_band_cv(const dc_job *j, const float *pl, int64_t img, int64_t o0, int64_t o1)
{
    const ql_dconv *d = &j->d;
    int64_t OW = d->ow, OHW = d->oh * OW, npix = (o1 - o0) * OW;
    int64_t r0 = 0, c0 = 0; /* band row and column of pixel p0 (no divisions per tile) */
    for (int64_t p0 = 0; p0 < npix; p0 += CV_P) {
        int64_t pix[CV_P], np = npix - p0 < CV_P ? npix - p0 : CV_P;
        for (int64_t p = 0, r = r0, c = c0; p < CV_P; p++) {
            pix[p] = r * d->sh * j->wq + c * d->sw;
            if (p + 1 < np && ++c == OW)
                c = 0, r++;
        }
        for (c0 += CV_P; c0 >= OW; c0 -= OW)
            r0++;
        /* whole vectors when the next tile of this band rewrites the two
         * pixels past this one (and the add is not y itself, whose pixels
         * the next tile would then read changed) */
        int wide = j->add_apart && p0 + 8 <= npix;
        int64_t ybase = img * d->M * OHW + o0 * OW + p0;
        for (int64_t m0 = 0; m0 < d->M; m0 += CV_M) {
            int64_t mn = d->M - m0 < CV_M ? d->M - m0 : CV_M, yo = ybase + m0 * OHW;
            (j->fast ? cv_fast : cv_port)(j->K, j->wp + m0 * j->K, pl, j->koff, pix,
                                          j->bias16 + m0, j->y + yo, OHW,
                                          j->add ? j->add + yo : NULL, mn, np, wide, j->act);
        }
    }
}

/* Plane rows [i0, i0+nrows) of all C channels for strides 1 (the common
 * case), where a plane row is just a padded image row: [pw zeros][iw
 * floats of the row][zeros up to wq]. The general ql_phase_rows spends
 * more on its per-row bookkeeping than on copying rows this short. */
QL_INLINE void dc_rows_s1_body(const float *x, int64_t C, int64_t ih, int64_t iw, int64_t ph,
                               int64_t pw, int64_t wq, int64_t i0, int64_t nrows,
                               int64_t chan_stride, float *pl)
{
    /* the empty asm keeps GCC from turning the short fills into memset
     * calls (a call per pad of one or two floats: a third of this copy) */
    for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < nrows; i++) {
            int64_t r = i0 + i - ph, t = 0;
            float *d = pl + c * chan_stride + i * wq;
            if (r < 0 || r >= ih) {
                for (; t + 8 <= wq; t += 8) {
                    __asm__("" : "+r"(t));
                    QL_ST8(d + t, QL_V8(0.0f));
                }
                for (; t < wq; t++) {
                    __asm__("" : "+r"(t));
                    d[t] = 0.0f;
                }
                continue;
            }
            const float *s = x + (c * ih + r) * iw;
            for (t = 0; t < pw; t++) {
                __asm__("" : "+r"(t));
                d[t] = 0.0f;
            }
            float *o = d + pw;
            int64_t n = iw < wq - pw ? iw : wq - pw; /* iw, as pads are not negative */
            if (n >= 8) {
                for (t = 0; t + 8 <= n; t += 8)
                    QL_ST8(o + t, QL_LD8(s + t));
                QL_ST8(o + n - 8, QL_LD8(s + n - 8)); /* the last 8, overlapping */
            } else {
                for (t = 0; t < n; t++) {
                    __asm__("" : "+r"(t));
                    o[t] = s[t];
                }
            }
            for (t = pw + n; t < wq; t++) {
                __asm__("" : "+r"(t));
                d[t] = 0.0f;
            }
        }
}

QL_TARGET_FAST static void dc_rows_s1_fast(const float *x, int64_t C, int64_t ih, int64_t iw,
                                           int64_t ph, int64_t pw, int64_t wq, int64_t i0,
                                           int64_t nrows, int64_t chan_stride, float *pl)
{
    dc_rows_s1_body(x, C, ih, iw, ph, pw, wq, i0, nrows, chan_stride, pl);
}

static void dc_rows_s1_port(const float *x, int64_t C, int64_t ih, int64_t iw, int64_t ph,
                            int64_t pw, int64_t wq, int64_t i0, int64_t nrows,
                            int64_t chan_stride, float *pl)
{
    dc_rows_s1_body(x, C, ih, iw, ph, pw, wq, i0, nrows, chan_stride, pl);
}

/* Tasks are (image, band of output rows): build the band's input rows
 * (all input channels) in this thread's buffer, then compute the band. */
static void dc_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const dc_job *j = arg;
    const ql_dconv *d = &j->d;
    float *pl = j->scratch + (int64_t)tid * j->per_thread;
    int64_t in_sz = d->ih * d->iw;
    for (int64_t t = begin; t < end; t++) {
        int64_t img = t / j->nbands, o0 = t % j->nbands * j->band;
        int64_t o1 = o0 + j->band < d->oh ? o0 + j->band : d->oh;
        const float *xi = j->x + img * d->C * in_sz;
        if (j->rows)
            (j->fast ? dc_rows_s1_fast : dc_rows_s1_port)(xi, d->C, d->ih, d->iw, d->ph, d->pw,
                                                          j->wq, o0 * d->sh, j->lrows,
                                                          j->chan_stride, pl);
        else
            for (int64_t c = 0; c < d->C; c++)
                ql_phase_rows(&j->ph, xi + c * in_sz, 0.0f, pl + c * j->chan_stride, o0,
                              j->lrows);
        if (j->cv)
            dc_band_cv(j, pl, img, o0, o1);
        else
            dc_band_rows(j, pl, img, o0, o1);
    }
}

ql_status ql_conv_direct(const ql_dconv *d, const float *x, const float *w, const float *packed,
                         const float *bias, const float *add, float *y, const ql_act *act,
                         ql_exec_ctx *ctx, ql_error *err)
{
    dc_job j = {.d = *d, .act = *act, .x = x, .bias = bias, .add = add, .y = y,
                .fast = ql_cpu_fast()};
    int64_t kvol = d->kh * d->kw, K = d->C * kvol, eh = (d->kh - 1) * d->dh + 1;
    int threads = ql_ctx_threads(ctx);
    j.K = K;
    ql_phase_plan(&j.ph, d->ih, d->iw, d->sh, d->sw, d->ph, d->pw, d->oh, d->ow, eh,
                  (d->kw - 1) * d->dw + 1);

    /* column chunks: nv vectors per row in chunks of at most DC_MAX_NB,
     * as even as possible; the row's last vector ends at OW */
    int64_t nv = (d->ow + 7) / 8;
    j.nchunks = (nv + DC_MAX_NB - 1) / DC_MAX_NB;
    if (j.nchunks > DC_MAX_CHUNKS) /* ql_conv_direct_fits says no */
        return ql_fail(err, QL_ERR_UNSUPPORTED, "direct conv: rows of %lld outputs",
                       (long long)d->ow);
    for (int64_t ci = 0, v0 = 0; ci < j.nchunks; ci++) {
        int64_t n = (nv - v0 + (j.nchunks - ci) - 1) / (j.nchunks - ci);
        j.col0[ci] = 8 * v0;
        j.nbv[ci] = n;
        int64_t lastcol = 8 * (v0 + n - 1);
        j.last[ci] = (lastcol + 8 > d->ow ? d->ow - 8 : lastcol) - j.col0[ci];
        v0 += n;
    }
    dc_layout(d, &j.mb, &j.cv); /* chunks are at most nbv[0] wide */
    int64_t ny = d->N * d->M * d->oh * d->ow;
    j.add_apart = !add || add + ny <= y || y + ny <= add;
    int64_t mpad = (d->M + CV_M - 1) / CV_M * CV_M;

    /* bands of output rows: plane rows of one band stay in L2, and small
     * batches are cut into enough tasks to share out */
    /* the input of a band: padded image rows (each output row reads sh
     * of them, plus the kernel's overhang), or phase planes */
    j.rows = j.cv || (d->sh == 1 && d->sw == 1);
    j.wq = j.rows ? (d->ow - 1) * d->sw + (d->kw - 1) * d->dw + 1 : j.ph.wq;
    int64_t halo = (eh - 1) / d->sh;
    int64_t row_bytes = d->C * d->sh * (j.rows ? 1 : d->sw) * j.wq * (int64_t)sizeof(float);
    int64_t fit = DC_PLANE_BYTES / row_bytes - halo;
    int64_t nbands = fit >= 1 ? (d->oh + fit - 1) / fit : d->oh;
    int64_t want = threads > 1 && d->N < 2 * threads ? (2 * threads + d->N - 1) / d->N : 1;
    nbands = nbands > want ? nbands : want;
    /* a task count the threads share evenly, when the batch is small */
    for (;; nbands++) {
        j.band = (d->oh + nbands - 1) / nbands;
        j.nbands = (d->oh + j.band - 1) / j.band;
        if (nbands >= d->oh || d->N >= 2 * threads || d->N * j.nbands % threads == 0)
            break;
    }
    j.lrows = j.rows ? (j.band - 1) * d->sh + eh : j.band + halo;
    j.chan_stride = j.rows ? j.lrows * j.wq : d->sh * d->sw * j.lrows * j.ph.wq;
    j.per_thread = (int64_t)dc_align16(d->C * j.chan_stride);

    /* scratch: [packed weights][bias16][koff][per-thread planes] */
    size_t w_floats = dc_align16(mpad * K) + dc_align16(mpad), k_floats = dc_align16(2 * K);
    size_t total = w_floats + k_floats + (size_t)j.per_thread * (size_t)threads;
    float *sc = ql_ctx_scratch(ctx, total * sizeof(float));
    if (!sc)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory for convolution scratch (%zu bytes)",
                       total * sizeof(float));
    /* weights packed at prepare time when the caller has them, else here,
     * from the tensor given (a fake-quant plan may run the node with
     * replacement weights) */
    float *wp = sc;
    if (!packed)
        ql_conv_direct_pack(d, w, wp);
    float *b16 = sc + dc_align16(mpad * K);
    for (int64_t m = 0; m < mpad; m++)
        b16[m] = bias && m < d->M ? bias[m] : 0.0f;
    j.bias16 = b16;
    int64_t *koff = (int64_t *)(sc + w_floats);
    ql_phase lay = j.ph;
    lay.hq = j.lrows;
    /* the taps' offsets within a channel (the first channel's row of
     * koff), then every channel's: no division per entry */
    for (int64_t ky = 0, r = 0; ky < d->kh; ky++)
        for (int64_t kx = 0; kx < d->kw; kx++, r++)
            koff[r] = j.rows ? ky * d->dh * j.wq + kx * d->dw
                             : ql_phase_off(&lay, ky * d->dh, kx * d->dw);
    for (int64_t c = 1; c < d->C; c++)
        for (int64_t r = 0; r < kvol; r++)
            koff[c * kvol + r] = c * j.chan_stride + koff[r];
    j.koff = koff;
    j.wp = packed ? packed : wp;
    j.scratch = sc + w_floats + k_floats;
    ql_parallel_for(ctx, d->N * j.nbands, 1, dc_tasks, &j);
    return QL_OK;
}
