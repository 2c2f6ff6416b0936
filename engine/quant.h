/* Quantization primitives: quantizer specs (bits, signedness, symmetry,
 * per-tensor or per-channel axis), encodings (scale and zero point per
 * tensor or channel), quantize/dequantize with round-half-to-even and a
 * saturating clamp, and fixed-point requantization for integer kernels. */
#ifndef QL_QUANT_H
#define QL_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

/* A quantizer spec. axis < 0: one encoding for the whole tensor. */
typedef struct ql_qspec {
    int bits;        /* 2..16 for weights and activations, 32 for biases */
    bool is_signed;
    bool symmetric;  /* zero point fixed: 0 (signed) or 2^(bits-1) (unsigned) */
    int axis;        /* channel axis, or -1 for per-tensor */
} ql_qspec;

/* Integer range of a spec: [qmin, qmax]. Signed symmetric uses the
 * restricted range [-(2^(b-1)-1), 2^(b-1)-1] so that scales are exactly
 * mirrored (as the BPU does); asymmetric uses the full range. */
void ql_qspec_range(const ql_qspec *s, int64_t *qmin, int64_t *qmax);
/* NULL if a spec is usable, else why not: bits 2..16, or 32 only signed
 * symmetric (so that every q and zero point fits an int32). */
const char *ql_qspec_check(const ql_qspec *s);

/* An encoding: n scales and zero points (n = 1 per-tensor, else the size of
 * the spec's axis), plus the real range each was made from. Owns its arrays. */
typedef struct ql_encoding {
    ql_qspec spec;
    int64_t n;
    float *scale;
    int32_t *zero_point;
    float *lo, *hi;  /* clipping range per channel (set_range: widened to contain 0) */
} ql_encoding;

ql_status ql_encoding_init(ql_encoding *e, const ql_qspec *spec, int64_t n, ql_error *err);
/* NULL when e fits a tensor of rank ndim and extents dims (an extent < 0 is
 * unknown and fits any count), else why not, written into buf; *field is
 * the part of the encoding at fault ("axis" or "scale"). */
const char *ql_encoding_check_shape(const ql_encoding *e, int ndim, const int64_t *dims,
                                    const char **field, char *buf, size_t n);
void ql_encoding_clear(ql_encoding *e);
ql_status ql_encoding_copy(ql_encoding *dst, const ql_encoding *src, ql_error *err);
bool ql_encoding_equal(const ql_encoding *a, const ql_encoding *b);

/* Sets channel c of e from a real range. The range is widened to contain
 * 0; symmetric specs use max(|lo|, |hi|). A zero-width range gets a tiny
 * positive scale so that quantize(0) = zero point and nothing divides by 0:
 * any scale below QL_SCALE_MIN (zero width, or underflow) becomes it. */
#define QL_SCALE_MIN 0x1p-32f
void ql_encoding_set_range(ql_encoding *e, int64_t c, double lo, double hi);

/* rint(x / scale) + zp, saturated to [qmin, qmax]: a float32 division (not
 * x * (1/scale)), round half to even, zp added after rounding; NaN -> zp. */
int32_t ql_quantize1(float x, float scale, int32_t zp, int64_t qmin, int64_t qmax);
static inline float ql_dequantize1(int32_t q, float scale, int32_t zp)
{
    return scale * (float)(q - zp);
}

/* In-place quantize-dequantize of a float tensor with e (per-channel along
 * e->spec.axis of t). NaN stays NaN; +-Inf saturate. */
ql_status ql_fake_quant(ql_tensor *t, const ql_encoding *e, ql_error *err);
/* Quantizes t (f32) to integers q (numel(t) int32 values). */
ql_status ql_quantize(const ql_tensor *t, const ql_encoding *e, int32_t *q, ql_error *err);

/* Fixed-point requantization: real multiplier m in (0, 2^31) as
 * m = mult * 2^-shift with mult in [2^30, 2^31) (int32). */
typedef struct ql_requant {
    int32_t mult;
    int shift;
} ql_requant;
ql_requant ql_requant_from_real(double m);
/* round(x * mult * 2^-shift), rounding half away from zero, saturated to int32. */
int32_t ql_requant_apply(int64_t x, ql_requant r);

#endif
