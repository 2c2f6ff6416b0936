/* Low-level pieces shared by the op families: sliding-window geometry
 * (pads, strides, dilations, auto_pad), the packed-panel GEMM micro-kernel
 * that convolutions run on, and "phase planes", the padded and
 * stride-split copies of an image that turn any strided, dilated window
 * into contiguous reads. Internal to engine/ops. */
#ifndef QL_KERNELS_H
#define QL_KERNELS_H

#include <stdint.h>

#include "../op.h"

#define QL_MAX_SPATIAL 3

/* Geometry of a sliding-window op (Conv, ConvTranspose, pools). */
typedef struct ql_window {
    int nsp;                          /* spatial dims (1..3) */
    int64_t kernel[QL_MAX_SPATIAL];
    int64_t stride[QL_MAX_SPATIAL];
    int64_t dilation[QL_MAX_SPATIAL];
    int64_t pad_begin[QL_MAX_SPATIAL];
    int64_t pad_end[QL_MAX_SPATIAL];
    int64_t in[QL_MAX_SPATIAL];       /* input extents (may be -1 at static time) */
    int64_t out[QL_MAX_SPATIAL];      /* output extents (-1 if unknown) */
} ql_window;

/* Reads kernel_shape (or takes `kernel` when given), strides, dilations,
 * pads and auto_pad of node n, and computes output extents for input
 * extents in[] (ceil_mode for pools). Errors name the attribute.
 * (ops/common.c) */
ql_status ql_window_init(const ql_node *n, int nsp, const int64_t *kernel, const int64_t *in,
                         int ceil_mode, ql_window *w, ql_error *err);

/* ---------------------------------------------------------------------------
 * 8-wide float vectors (GCC vector extensions). Kernels that use them come
 * in two builds, one for AVX2+FMA and a portable one, chosen at run time by
 * ql_cpu_fast(); the choice depends only on the machine, so results never
 * depend on the thread count.
 * ------------------------------------------------------------------------- */
typedef float ql_v8 __attribute__((vector_size(32)));
typedef float ql_v8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t ql_v8i __attribute__((vector_size(32)));
typedef float ql_v4 __attribute__((vector_size(16)));
#define QL_V8(x) ((ql_v8){(x), (x), (x), (x), (x), (x), (x), (x)})
#define QL_LD8(p) (*(const ql_v8u *)(p))
#define QL_ST8(p, v) (*(ql_v8u *)(p) = (v))
#define QL_INLINE static inline __attribute__((always_inline))
#if defined(__x86_64__) || defined(__i386__)
#define QL_TARGET_FAST __attribute__((target("avx2,fma")))
/* Non-temporal store of 8 floats at a 16-byte aligned p (two SSE stores,
 * which every x86-64 has); ql_stream_fence() orders them before the
 * results are handed to other threads. */
#define QL_ST8_NT(p, v)                                                  \
    ({                                                                   \
        union { ql_v8 v8; ql_v4 v4[2]; } u_ = {.v8 = (v)};               \
        __builtin_ia32_movntps((p), u_.v4[0]);                           \
        __builtin_ia32_movntps((p) + 4, u_.v4[1]);                       \
    })
static inline void ql_stream_fence(void) { __builtin_ia32_sfence(); }
#else
#define QL_TARGET_FAST
#define QL_ST8_NT(p, v) QL_ST8(p, v)
static inline void ql_stream_fence(void) {}
#endif
/* Outputs larger than this are written with non-temporal stores. */
#define QL_STREAM_BYTES ((int64_t)32 << 20)

/* Lane-wise select: m ? b : a (m from a vector comparison). Macros, not
 * functions, so no vector value crosses a call (that would tie the ABI to
 * the instruction set). */
#define QL_V8_SEL(m, a, b) ((ql_v8)(((ql_v8i)(a) & ~(m)) | ((ql_v8i)(b) & (m))))
#define QL_V8_MAX(a, b) ({ ql_v8 a_ = (a), b_ = (b); QL_V8_SEL(b_ > a_, a_, b_); })
/* Clamp to [lo, hi]; NaN passes through (as Relu/Clip do). */
#define QL_V8_CLAMP(a, lo, hi) \
    ({ ql_v8 x_ = (a), l_ = (lo), h_ = (hi); x_ = QL_V8_SEL(x_ < l_, x_, l_); QL_V8_SEL(x_ > h_, x_, h_); })

/* the 8x8 transpose: r[i] element c -> r[c] element i */
QL_INLINE void ql_transpose8(ql_v8 r[8])
{
    static const ql_v8i lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
    static const ql_v8i s44 = {0, 1, 8, 9, 4, 5, 12, 13}, sEE = {2, 3, 10, 11, 6, 7, 14, 15};
    static const ql_v8i p20 = {0, 1, 2, 3, 8, 9, 10, 11}, p31 = {4, 5, 6, 7, 12, 13, 14, 15};
    ql_v8 t[8], u[8];
    /* unrolled, so that t and u live in registers, not on the stack */
#pragma GCC unroll 8
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i += 4) {
        u[i] = __builtin_shuffle(t[i], t[i + 2], s44);
        u[i + 1] = __builtin_shuffle(t[i], t[i + 2], sEE);
        u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], s44);
        u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], sEE);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        r[i] = __builtin_shuffle(u[i], u[i + 4], p20);
        r[i + 4] = __builtin_shuffle(u[i], u[i + 4], p31);
    }
}

/* v += n (< 8) floats from s, and n floats of v stored at d, without
 * library calls (the empty asm keeps GCC from making them memcpy) */
QL_INLINE void ql_add_n(ql_v8 *v, const float *s, int64_t n)
{
    float t[8] = {0};
    for (int64_t i = 0; i < n; i++) {
        __asm__("" : "+r"(i));
        t[i] = s[i];
    }
    *v += QL_LD8(t);
}

QL_INLINE void ql_store_n(float *d, ql_v8 v, int64_t n)
{
    float t[8];
    QL_ST8(t, v);
    for (int64_t i = 0; i < n; i++) {
        __asm__("" : "+r"(i));
        d[i] = t[i];
    }
}

/* True when the AVX2+FMA kernel builds can run here. (ops/gemm.c) */
int ql_cpu_fast(void);

/* A fused activation applied as outputs are stored: clamp to [lo, hi]
 * (Relu is [0, inf), Clip its range). Taken from the executor's request
 * in the context (ctx->post_clamp) by ops whose row sets fuses_clamp. */
typedef struct ql_act {
    int on;
    float lo, hi;
} ql_act;

/* ---------------------------------------------------------------------------
 * Packed GEMM micro-kernel (ops/gemm.c). K is cut into blocks of at most
 * QL_KC (ql_kblock(K) each, the last maybe shorter). A (M x K) is packed
 * once, block by block, into panels of QL_MR rows, k-major: the block at k
 * offset pc starts at a + pc*Mpad (Mpad = M rounded up to MR) and holds
 * panel p at p*MR*kc, element (k, r) at k*MR + r (rows past M are zero),
 * so the panels one block of rows needs are contiguous. B is packed per k-block
 * into tiles of QL_NR columns, k-major: tile element (k, c) at b[k*NR + c],
 * 32-byte aligned. Each output element is a sum over k in a fixed order
 * (in order; the 8-wide kernel sums even and odd k apart, and is used for a
 * block's last columns, blocks being set by the shape alone), so results
 * are bit-identical for any split of rows or blocks across threads.
 * ------------------------------------------------------------------------- */
#define QL_MR 6
#define QL_NR 16
#define QL_KC 256 /* a 16-column B tile of KC rows stays in L1 */

enum {
    QL_UKR_ACCUM = 1, /* add to C instead of starting from bias (or zero) */
    QL_UKR_CLAMP = 2, /* clamp the result to [lo, hi] before storing */
    QL_UKR_STREAM = 4, /* final result, C 16-byte aligned: non-temporal stores */
    QL_UKR_ADD = 8,    /* final result: add `add` (rows at add + r*ldc) before any clamp */
};

/* The k-block length for K: K split into equal blocks of at most QL_KC. */
static inline int64_t ql_kblock(int64_t K)
{
    int64_t nkb = (K + QL_KC - 1) / QL_KC;
    return nkb ? (K + nkb - 1) / nkb : 0;
}
/* Floats needed to pack an M x K matrix. */
int64_t ql_pack_a_floats(int64_t M, int64_t K);
/* Packs row-major a (M x K, row stride lda) into dst. */
void ql_pack_a(const float *a, int64_t lda, int64_t M, int64_t K, float *dst);
/* The packed panel of row `row` (a multiple of MR) in the k-block at pc. */
static inline const float *ql_pack_a_at(const float *ap, int64_t M, int64_t K, int64_t pc,
                                        int64_t row)
{
    int64_t kb = ql_kblock(K), kc = K - pc < kb ? K - pc : kb;
    return ap + pc * ((M + QL_MR - 1) / QL_MR * QL_MR) + row * kc;
}

typedef void (*ql_ukr_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                          int mr, const float *bias, const float *add, int flags, float lo,
                          float hi);
/* The MR x NR tile kernel for this machine over kc steps of a packed A
 * panel and a packed B tile: C tile rows at c + r*ldc, of which the first
 * mr (1..MR) are loaded and stored; bias has mr entries (or is NULL for
 * zero); add is read with QL_UKR_ADD (else may be NULL). */
ql_ukr_fn ql_ukr_select(void);
/* The MR x 8 kernel, for a last tile of at most 8 columns packed 8 wide. */
ql_ukr_fn ql_ukr8_select(void);
/* Runs fn (a kernel of `width` columns, 8 or 16) on a tile of mr <= MR
 * rows and nr <= width columns. */
void ql_ukr_partial(ql_ukr_fn fn, int width, int64_t kc, const float *a, const float *b, float *c,
                    int64_t ldc, int mr, int nr, const float *bias, const float *add, int flags,
                    float lo, float hi);

/* ---------------------------------------------------------------------------
 * Phase planes (ops/conv.c). For a 2-D window with strides (sh, sw) over an
 * image padded by (ph, pw) at the start (and anything at the end), the
 * plane set holds sh*sw planes of hq x wq: plane (a, b) element (i, j) is
 * padded-image element (i*sh + a, j*sw + b), `fill` outside the image. Then
 * tap (r, s) of the window (r = ki*dh, s = kj*dw) for output (oh, ow) is
 * element phase_off(r, s) + oh*wq + ow: contiguous in ow, and across rows
 * when output columns are numbered oh*wq + ow.
 * ------------------------------------------------------------------------- */
typedef struct ql_phase {
    int64_t h, w;    /* image extents */
    int64_t sh, sw;  /* strides */
    int64_t ph, pw;  /* leading pads */
    int64_t hq, wq;  /* plane extents */
    int64_t size;    /* floats of one plane set: sh*sw*hq*wq */
} ql_phase;

/* Plans plane sets for an image of h x w whose windows of extents
 * (eh, ew) (dilated kernel spans) produce oh x ow outputs. */
void ql_phase_plan(ql_phase *p, int64_t h, int64_t w, int64_t sh, int64_t sw, int64_t ph,
                   int64_t pw, int64_t oh, int64_t ow, int64_t eh, int64_t ew);
/* Offset of tap (r, s) (dilated kernel position) inside a plane set. */
static inline int64_t ql_phase_off(const ql_phase *p, int64_t r, int64_t s)
{
    return ((r % p->sh) * p->sw + s % p->sw) * p->hq * p->wq + (r / p->sh) * p->wq + s / p->sw;
}
/* Fills one plane set from image x (h x w, row-major). */
void ql_phase_build(const ql_phase *p, const float *x, float fill, float *dst);
/* Rows [i0, i0+nrows) of every plane of the set (rows past hq are fill),
 * as planes of nrows x wq: tap (r, s) then sits at phase_off computed
 * with hq = nrows, output row oh at (oh - i0)*wq. */
void ql_phase_rows(const ql_phase *p, const float *x, float fill, float *dst, int64_t i0,
                   int64_t nrows);

/* ---------------------------------------------------------------------------
 * Direct convolution for few channels (ops/conv_direct.c): group 1, 1-D or
 * 2-D, kernels of more than one tap; computes from phase-plane rows built
 * per band of output rows, with no B packing and no column buffer.
 * ------------------------------------------------------------------------- */
typedef struct ql_dconv {
    int64_t N, C, M;                        /* batch, input and output channels */
    int64_t ih, iw, oh, ow;                 /* input and output extents (1-D: 1 x w) */
    int64_t kh, kw, sh, sw, dh, dw, ph, pw; /* kernel, strides, dilations, leading pads */
} ql_dconv;

/* True when ql_conv_direct handles d and is expected to beat the GEMM path. */
int ql_conv_direct_fits(const ql_dconv *d);
/* Packed weights: a packing made for d serves any d2 of the same
 * weights with ql_conv_direct_layout(d2) == ql_conv_direct_layout(d). */
int64_t ql_conv_direct_layout(const ql_dconv *d);
int64_t ql_conv_direct_packed_floats(const ql_dconv *d);
void ql_conv_direct_pack(const ql_dconv *d, const float *w, float *dst);
/* y = conv(x, w) + bias (NULL: none), then + add (NULL: none; y's shape),
 * then act's clamp. w is [M][C][kh][kw]; packed is its packing for d's
 * layout, or NULL to pack w in this call. */
ql_status ql_conv_direct(const ql_dconv *d, const float *x, const float *w, const float *packed,
                         const float *bias, const float *add, float *y, const ql_act *act,
                         ql_exec_ctx *ctx, ql_error *err);

/* ---------------------------------------------------------------------------
 * Depthwise convolution of small images in blocks of 8 channels
 * (ops/conv_dw8.c): C == M (one output channel per input channel), 1-D or
 * 2-D; the same bits as the planar depthwise path in ops/conv.c.
 * ------------------------------------------------------------------------- */
/* Output pixels up to which it beats the planar path (measured on
 * MobileNetV2's layers): strided, whose planes need rows de-interleaved,
 * and stride 1. */
#define QL_DW8_MAX_OUT 784
#define QL_DW8_MAX_OUT_S1 256
int ql_conv_dw8_fits(const ql_dconv *d);
/* y = depthwise conv(x, w) + bias, + add, clamp (as ql_conv_direct); w is
 * [C][kh][kw]. */
ql_status ql_conv_dw8(const ql_dconv *d, const float *x, const float *w, const float *bias,
                      const float *add, float *y, const ql_act *act, ql_exec_ctx *ctx,
                      ql_error *err);

/* Data movement (transform.c, pad.c, gather.c): an element's size, and
 * the items one parallel work item should take so that it moves at least
 * 32 KiB, which keeps thread start-up negligible next to the copying. */
static inline size_t esize(const ql_tensor *t) { return ql_dtype_info(t->dtype)->size; }

#define GRAIN_BYTES ((int64_t)32 << 10)

/* outer = product of t's dims before ax, inner = product after. */
static inline void outer_inner(const ql_tensor *t, int ax, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < ax; i++)
        *outer *= t->dims[i];
    for (int i = ax + 1; i < t->ndim; i++)
        *inner *= t->dims[i];
}

static inline int64_t grain_for(int64_t bytes_per_item)
{
    return bytes_per_item >= GRAIN_BYTES ? 1 : GRAIN_BYTES / (bytes_per_item > 0 ? bytes_per_item : 1);
}

#endif
