/* What the Conv paths share (conv.c chooses among them): the geometry,
 * small helpers, and the GEMM path of conv_gemm.c. Phase planes are in
 * conv_phase.c (declared in kernels.h). */
#ifndef QL_CONV_PRIV_H
#define QL_CONV_PRIV_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

/* ---------------------------------------------------------------------------
 * Geometry, normalised to three spatial dims (D, H, W); 1-D and 2-D use
 * unit leading dims
 * ------------------------------------------------------------------------- */
typedef struct conv_geom {
    int nsp;
    int64_t N, C, M, G, cg, mg, kvol, K; /* K = cg * kvol */
    int64_t in[3], out[3], k[3], s[3], d[3], pb[3];
    int64_t in_sz, out_sz;
} conv_geom;

static inline void fill_floats(float *d, int64_t n, float v)
{
    if (v == 0.0f && !signbit(v)) {
        memset(d, 0, (size_t)(n > 0 ? n : 0) * sizeof *d);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        d[i] = v;
}

/* Copies n floats (d and s do not overlap); short runs (rows of small
 * images) are common, so no library call: the empty asm keeps GCC from
 * turning the loops back into memcpy. Inlined into both kernel builds. */
QL_INLINE void copy_floats(float *restrict d, const float *restrict s, int64_t n)
{
    int64_t i = 0;
    if (n >= 8) {
        for (; i + 8 <= n; i += 8) {
            __asm__("" : "+r"(i));
            QL_ST8(d + i, QL_LD8(s + i));
        }
        if (i < n) /* the last 8, overlapping what was copied */
            QL_ST8(d + n - 8, QL_LD8(s + n - 8));
        return;
    }
    for (; i < n; i++) {
        __asm__("" : "+r"(i));
        d[i] = s[i];
    }
}

static inline size_t align16(int64_t floats) { return (size_t)((floats + 15) / 16 * 16); }

/* The GEMM path: any Conv (groups, 1-3 spatial dims). apack is the packing
 * of wt made at prepare time (ql_pack_a per group), or NULL to pack here. */
ql_status ql_conv_gemm(const conv_geom *g, const float *apack, const float *x, const float *wt,
                       const float *bias, const float *add, float *y, const ql_act *act,
                       ql_exec_ctx *ctx, ql_error *err);

#endif
