/* Depthwise convolution in blocks of 8 channels (kernels.h, used by
 * ops/conv.c for small images).
 *
 * Why it exists: the planar depthwise path builds the phase planes of one
 * channel, runs the taps over them and copies the result out, per channel.
 * On small images (14x14, 7x7: the late layers of MobileNets, hundreds of
 * channels) that bookkeeping costs more than the multiply-adds, and a
 * stride of 2 adds a de-interleave of rows a few floats long. Here a task
 * takes 8 channels of one image: it transposes them into a zero-padded
 * buffer of pixels x 8 channels (8x8 transposes in registers), so that
 * every tap of every output pixel is one full-width multiply-add whatever
 * the stride or dilation, then transposes 8 output pixels at a time back
 * into the channels' rows of y.
 *
 * Every output is bias + its taps in (kernel row, kernel column) order,
 * the padding's zeros included, then the fused residual add, then the
 * clamp: the same operations, in the same order, as the planar path, so
 * the two give the same bits. */
#include "kernels.h"

#define DW8_BUF_FLOATS ((int64_t)48 << 10) /* padded input of one task: 192 KiB */

typedef struct dw8_job {
    ql_dconv d;
    ql_act act;
    const float *x, *w, *bias, *add;
    float *y;
    int64_t hp, wp;      /* padded input extents the outputs reach */
    int64_t ntaps, nblk; /* taps; channel blocks per image */
    int64_t *toff;       /* tap offsets in the buffer (floats) */
    float *scratch;
    int64_t per_thread;
    int fast;
} dw8_job;

/* The task's 8 channels (nc of them real, zeros for the rest) into
 * buf[(r * wp + j) * 8 + c], r and j padded coordinates; src[c] is
 * channel c's image. The image goes 8 pixels at a time in its own order
 * (rows of any width, and no read past a channel's pixels; a last block
 * overlaps the one before), each block transposed in registers. */
QL_INLINE void dw8_fill(const dw8_job *j, const float *const src[8], int64_t nc, float *buf)
{
    const ql_dconv *d = &j->d;
    int64_t wp = j->wp, iw = d->iw;
    /* image rows [0, rmax) and columns [0, c1) lie inside the buffer */
    int64_t c1 = d->pw + iw < wp ? iw : wp - d->pw;
    int64_t rmax = d->ph + d->ih < j->hp ? d->ih : j->hp - d->ph;
    for (int64_t r = 0; r < j->hp; r++) {
        int64_t ih = r - d->ph;
        float *row = buf + r * wp * 8;
        if (ih < 0 || ih >= rmax || c1 <= 0) {
            for (int64_t k = 0; k < wp; k++)
                QL_ST8(row + 8 * k, QL_V8(0.0f));
            continue;
        }
        for (int64_t k = 0; k < d->pw && k < wp; k++)
            QL_ST8(row + 8 * k, QL_V8(0.0f));
        for (int64_t k = d->pw + c1; k < wp; k++)
            QL_ST8(row + 8 * k, QL_V8(0.0f));
    }
    if (rmax <= 0 || c1 <= 0)
        return;
    float *o = buf + (d->ph * wp + d->pw) * 8;
    int64_t npix = rmax * iw;
    if (npix < 8) {
        for (int64_t q = 0; q < npix; q++)
            if (q % iw < c1)
                for (int c = 0; c < 8; c++)
                    o[(q / iw * wp + q % iw) * 8 + c] = c < nc ? src[c][q] : 0.0f;
        return;
    }
    for (int64_t f0 = 0; f0 < npix; f0 += 8) {
        int64_t f = f0 + 8 <= npix ? f0 : npix - 8;
        ql_v8 v[8];
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++)
            if (c < nc)
                v[c] = QL_LD8(src[c] + f);
            else
                v[c] = QL_V8(0.0f);
        ql_transpose8(v);
        int64_t row = f / iw, col = f % iw;
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            if (col < c1)
                QL_ST8(o + (row * wp + col) * 8, v[k]);
            if (++col == iw)
                col = 0, row++;
        }
    }
}

/* One task: image img, channels [c0, c0 + nc). */
QL_INLINE void dw8_body(const dw8_job *j, int64_t img, int64_t c0, int64_t nc, float *buf)
{
    const ql_dconv *d = &j->d;
    int64_t in_sz = d->ih * d->iw, OW = d->ow, OHW = d->oh * OW, ntaps = j->ntaps;
    /* per thread: [padded input][weights, tap-major] */
    float *wv = buf + j->hp * j->wp * 8;
    const float *src[8];
    for (int c = 0; c < 8; c++)
        src[c] = j->x + (img * d->C + c0 + (c < nc ? c : 0)) * in_sz;
    dw8_fill(j, src, nc, buf);

    /* weights and bias of the 8 channels (zeros past nc) */
    float bias[8];
    for (int c = 0; c < 8; c++) {
        bias[c] = c < nc && j->bias ? j->bias[c0 + c] : 0.0f;
        for (int64_t t = 0; t < ntaps; t++)
            wv[8 * t + c] = c < nc ? j->w[(c0 + c) * ntaps + t] : 0.0f;
    }
    ql_v8 vb = QL_LD8(bias), lo = QL_V8(j->act.lo), hi = QL_V8(j->act.hi);
    /* with an add, the clamp comes after it */
    int clamp_here = j->act.on && !j->add;
    for (int64_t p0 = 0; p0 < OHW; p0 += 8) {
        int64_t np = OHW - p0 < 8 ? OHW - p0 : 8;
        /* pixel p's window; past np, the last pixel's again */
        const float *pp[8];
        int64_t oh = p0 / OW, ow = p0 % OW;
        for (int p = 0; p < 8; p++) {
            pp[p] = buf + (oh * d->sh * j->wp + ow * d->sw) * 8;
            if (p + 1 < np && ++ow == OW)
                ow = 0, oh++;
        }
        ql_v8 acc[8];
#pragma GCC unroll 8
        for (int p = 0; p < 8; p++)
            acc[p] = vb;
        for (int64_t t = 0; t < ntaps; t++) {
            ql_v8 w = QL_LD8(wv + 8 * t);
            int64_t o = j->toff[t];
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++)
                acc[p] += w * QL_LD8(pp[p] + o);
        }
        if (clamp_here)
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++)
                acc[p] = QL_V8_CLAMP(acc[p], lo, hi);
        ql_transpose8(acc);
        for (int c = 0; c < nc; c++) {
            int64_t off = (img * d->M + c0 + c) * OHW + p0;
            ql_v8 v = acc[c];
            if (j->add) {
                if (np == 8)
                    v += QL_LD8(j->add + off);
                else
                    ql_add_n(&v, j->add + off, np);
                if (j->act.on)
                    v = QL_V8_CLAMP(v, lo, hi);
            }
            if (np == 8)
                QL_ST8(j->y + off, v);
            else
                ql_store_n(j->y + off, v, np);
        }
    }
}

QL_TARGET_FAST static void dw8_fast(const dw8_job *j, int64_t img, int64_t c0, int64_t nc,
                                    float *buf)
{
    dw8_body(j, img, c0, nc, buf);
}

static void dw8_port(const dw8_job *j, int64_t img, int64_t c0, int64_t nc, float *buf)
{
    dw8_body(j, img, c0, nc, buf);
}

static void dw8_tasks(void *arg, int64_t begin, int64_t end, int tid)
{
    const dw8_job *j = arg;
    float *buf = j->scratch + (int64_t)tid * j->per_thread;
    for (int64_t t = begin; t < end; t++) {
        int64_t img = t / j->nblk, c0 = t % j->nblk * 8;
        int64_t nc = j->d.C - c0 < 8 ? j->d.C - c0 : 8;
        (j->fast ? dw8_fast : dw8_port)(j, img, c0, nc, buf);
    }
}

/* The padded input one task holds, in floats. */
static int64_t dw8_buf_floats(const ql_dconv *d, int64_t *hp, int64_t *wp)
{
    *hp = (d->oh - 1) * d->sh + (d->kh - 1) * d->dh + 1;
    *wp = (d->ow - 1) * d->sw + (d->kw - 1) * d->dw + 1;
    return *hp * *wp * 8;
}

int ql_conv_dw8_fits(const ql_dconv *d)
{
    int64_t hp, wp;
    return d->C >= 1 && d->M == d->C && d->kh * d->kw <= 64 && d->oh >= 1 && d->ow >= 1 &&
           d->oh * d->ow <= (d->sh > 1 || d->sw > 1 ? QL_DW8_MAX_OUT : QL_DW8_MAX_OUT_S1) &&
           dw8_buf_floats(d, &hp, &wp) <= DW8_BUF_FLOATS;
}

ql_status ql_conv_dw8(const ql_dconv *d, const float *x, const float *w, const float *bias,
                      const float *add, float *y, const ql_act *act, ql_exec_ctx *ctx,
                      ql_error *err)
{
    dw8_job j = {.d = *d, .act = *act, .x = x, .w = w, .bias = bias, .add = add, .y = y,
                 .fast = ql_cpu_fast()};
    if (!ql_conv_dw8_fits(d))
        return ql_fail(err, QL_ERR_UNSUPPORTED, "depthwise conv: not for the 8-channel kernel");
    int64_t buf = dw8_buf_floats(d, &j.hp, &j.wp);
    j.ntaps = d->kh * d->kw;
    j.nblk = (d->C + 7) / 8;
    int threads = ql_ctx_threads(ctx);
    /* per thread: [padded input][weights]; then the tap offsets */
    j.per_thread = (buf + 8 * j.ntaps + 15) / 16 * 16;
    size_t total = (size_t)j.per_thread * (size_t)threads + (size_t)(2 * j.ntaps);
    j.scratch = ql_ctx_scratch(ctx, total * sizeof(float));
    if (!j.scratch)
        return ql_fail(err, QL_ERR_NOMEM, "out of memory for depthwise convolution scratch");
    j.toff = (int64_t *)(j.scratch + j.per_thread * threads);
    for (int64_t t = 0; t < j.ntaps; t++)
        j.toff[t] = ((t / d->kw) * d->dh * j.wp + (t % d->kw) * d->dw) * 8;
    ql_parallel_for(ctx, d->N * j.nblk, 1, dw8_tasks, &j);
    return QL_OK;
}
