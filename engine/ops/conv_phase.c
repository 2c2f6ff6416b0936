/* Phase planes (kernels.h): the padded input split by stride, so that
 * every kernel tap of a run of output columns is contiguous. Read by the
 * GEMM path (conv_gemm.c), the planar depthwise kernel (conv.c) and the
 * direct kernel (conv_direct.c). */
#include <stdlib.h>
#include <string.h>

#include "conv_priv.h"

/* ---------------------------------------------------------------------------
 * Phase planes (kernels.h)
 * ------------------------------------------------------------------------- */
void ql_phase_plan(ql_phase *p, int64_t h, int64_t w, int64_t sh, int64_t sw, int64_t ph,
                   int64_t pw, int64_t oh, int64_t ow, int64_t eh, int64_t ew)
{
    p->h = h, p->w = w, p->sh = sh, p->sw = sw, p->ph = ph, p->pw = pw;
    p->hq = oh + (eh - 1) / sh;
    p->wq = ow + (ew - 1) / sw;
    p->size = sh * sw * p->hq * p->wq;
}



/* Splits row[0, n) into even and odd elements: ev[t] = row[2t],
 * od[t] = row[2t+1], sixteen inputs per step. */
QL_INLINE void deinterleave_body(const float *restrict row, int64_t n, float *restrict ev,
                                 float *restrict od)
{
    static const ql_v8i even = {0, 2, 4, 6, 8, 10, 12, 14}, odd = {1, 3, 5, 7, 9, 11, 13, 15};
    int64_t t = 0;
    for (; 2 * t + 16 <= n; t += 8) {
        ql_v8 v0 = QL_LD8(row + 2 * t), v1 = QL_LD8(row + 2 * t + 8);
        QL_ST8(ev + t, __builtin_shuffle(v0, v1, even));
        QL_ST8(od + t, __builtin_shuffle(v0, v1, odd));
    }
    for (; 2 * t < n; t++) {
        ev[t] = row[2 * t];
        if (2 * t + 1 < n)
            od[t] = row[2 * t + 1];
    }
}

/* The body of ql_phase_build, compiled for AVX2 and portably. */
QL_INLINE void phase_build_body(const ql_phase *p, const float *x, float fill, float *dst,
                                 int64_t i0, int64_t nrows)
{
    int64_t plane = nrows * p->wq;
    /* per column phase b: plane columns [j0, j1) read image columns
     * j*sw + b - pw, which lie inside [0, w) */
    int64_t j0s[8], j1s[8];
    for (int64_t b = 0; b < p->sw && b < 8; b++) {
        int64_t j0 = p->pw > b ? (p->pw - b + p->sw - 1) / p->sw : 0;
        int64_t j1 = p->w + p->pw - b > 0 ? (p->w - 1 + p->pw - b) / p->sw + 1 : 0;
        j0 = j0 < p->wq ? j0 : p->wq;
        j1 = j1 < p->wq ? j1 : p->wq;
        j0s[b] = j0;
        j1s[b] = j1 > j0 ? j1 : j0;
    }
    /* stride 2 with the whole row inside the planes: one pass splits it */
    int split2 = p->sw == 2 && (p->w + p->pw + 1) / 2 <= p->wq;
    /* image rows in order (plane row i of phase a reads row i*sh + a):
     * a pass per phase would read every sh-th row and leave the
     * prefetchers a strided pattern */
    for (int64_t i = i0; i < i0 + nrows; i++)
        for (int64_t a = 0; a < p->sh; a++) {
            int64_t ih = i * p->sh + a - p->ph;
            int inside = ih >= 0 && ih < p->h;
            const float *row = inside ? x + ih * p->w : x;
            float *out0 = dst + a * p->sw * plane + (i - i0) * p->wq;
            if (!inside) {
                for (int64_t b = 0; b < p->sw; b++)
                    fill_floats(out0 + b * plane, p->wq, fill);
                continue;
            }
            if (split2) {
                /* image column iw is padded column iw + pw: phase (iw+pw)%2,
                 * plane column (iw+pw)/2 */
                float *pe = out0 + (p->pw & 1) * plane, *po = out0 + ((p->pw + 1) & 1) * plane;
                for (int64_t b = 0; b < 2; b++) {
                    float *o = out0 + b * plane;
                    for (int64_t j = 0; j < j0s[b]; j++)
                        o[j] = fill;
                    for (int64_t j = j1s[b]; j < p->wq; j++)
                        o[j] = fill;
                }
                deinterleave_body(row, p->w, pe + p->pw / 2, po + (p->pw + 1) / 2);
                continue;
            }
            for (int64_t b = 0; b < p->sw; b++) {
                float *out = out0 + b * plane;
                int64_t j0, j1;
                if (b < 8) {
                    j0 = j0s[b], j1 = j1s[b];
                } else {
                    j0 = p->pw > b ? (p->pw - b + p->sw - 1) / p->sw : 0;
                    j1 = p->w + p->pw - b > 0 ? (p->w - 1 + p->pw - b) / p->sw + 1 : 0;
                    j0 = j0 < p->wq ? j0 : p->wq;
                    j1 = j1 < p->wq ? j1 : p->wq;
                    j1 = j1 > j0 ? j1 : j0;
                }
                const float *src = row + (j0 * p->sw + b - p->pw);
                for (int64_t j = 0; j < j0; j++) /* pads are short: no call */
                    out[j] = fill;
                if (p->sw == 1)
                    copy_floats(out + j0, src, j1 - j0);
                else
                    for (int64_t j = j0; j < j1; j++)
                        out[j] = src[(j - j0) * p->sw];
                for (int64_t j = j1; j < p->wq; j++)
                    out[j] = fill;
            }
        }
}

QL_TARGET_FAST static void phase_build_fast(const ql_phase *p, const float *x, float fill,
                                            float *dst, int64_t i0, int64_t nrows)
{
    phase_build_body(p, x, fill, dst, i0, nrows);
}

static void phase_build_portable(const ql_phase *p, const float *x, float fill, float *dst,
                                 int64_t i0, int64_t nrows)
{
    phase_build_body(p, x, fill, dst, i0, nrows);
}

void ql_phase_rows(const ql_phase *p, const float *x, float fill, float *dst, int64_t i0,
                   int64_t nrows)
{
    if (ql_cpu_fast())
        phase_build_fast(p, x, fill, dst, i0, nrows);
    else
        phase_build_portable(p, x, fill, dst, i0, nrows);
}

void ql_phase_build(const ql_phase *p, const float *x, float fill, float *dst)
{
    ql_phase_rows(p, x, fill, dst, 0, p->hq);
}
