/* qlens-plugin.h: the one header a qlens calibration plugin needs.
 *
 * A plugin is a shared module exporting one function, QLENS_PLUGIN_ENTRY,
 * that returns a pointer to a static qlp_plugin. qlens checks the ABI
 * version and the callbacks before using it. An activation algorithm turns
 * the statistics of one tensor (min, max, histogram) into a clipping range;
 * a weight algorithm turns one layer's weights into per-channel ranges, and
 * may also choose each weight's rounding (AdaRound) from cached layer inputs.
 * Plugins see nothing of qlens but this header. See qlens-plugin(7). */
#ifndef QLENS_PLUGIN_H
#define QLENS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change of the structs or callbacks below. */
#define QLP_ABI_VERSION 1
#define QLENS_PLUGIN_ENTRY qlens_plugin_entry
#define QLENS_PLUGIN_ENTRY_NAME "qlens_plugin_entry"

/* What a plugin provides (a bit mask: one module may be both kinds, e.g.
 * minmax). Algorithms are found by name and kind. */
typedef enum {
    QLP_KIND_ACTIVATION = 1, /* statistics -> range: act_range */
    QLP_KIND_WEIGHT = 2,     /* weights -> per-channel ranges: weight_range (+ weight_round) */
} qlp_kind;

/* ---- parameters ---------------------------------------------------------- */

typedef enum { QLP_PARAM_FLOAT = 1, QLP_PARAM_INT = 2 } qlp_param_type;

/* One entry of a plugin's parameter schema. qlens parses "name:key=value,..."
 * against it, refuses unknown keys and values outside [min, max], and hands
 * the plugin the values in schema order. */
typedef struct qlp_param_def {
    const char *key;
    qlp_param_type type;
    double dflt, min, max;
    const char *help;
} qlp_param_def;

/* Parameter values in schema order (ints stored exactly as doubles). */
typedef struct qlp_params {
    int n;
    const double *v;
} qlp_params;

/* ---- what is being quantized --------------------------------------------- */

/* The integer grid: values are q in [qmin, qmax]; real = scale * (q - zero_point). */
typedef struct qlp_format {
    int bits;      /* 4..16 */
    int is_signed; /* [-2^(b-1), 2^(b-1)-1] (symmetric: [-(2^(b-1)-1), 2^(b-1)-1]) or [0, 2^b-1] */
    int symmetric; /* zero_point fixed at 0 (signed) or 2^(b-1) (unsigned) */
    int64_t qmin, qmax;
} qlp_format;

/* Statistics of one activation tensor over the calibration data. counts has
 * nbins equal-width bins covering [lo, hi); every observed value lies in it
 * (values equal to hi fall in the last bin). NaN never appears. */
typedef struct qlp_hist {
    double min, max;       /* observed extremes (min <= max when count > 0) */
    uint64_t count;        /* number of values observed */
    int nbins;
    double lo, hi;         /* histogram range, lo <= min, max <= hi */
    const uint64_t *counts;
} qlp_hist;

/* Progress and cancellation for long work. */
typedef struct qlp_host {
    /* Reports done out of total; returns non-zero when the user cancelled,
     * in which case the callback should stop and return QLP_CANCELLED. */
    int (*progress)(void *user, int64_t done, int64_t total);
    void *user;
    int n_threads; /* threads the plugin may use */
} qlp_host;

/* One weighted layer for weight algorithms. The layer computes, for each
 * group g and each column m of its im2col'd input X_g [k x M],
 * y[c, m] = clamp(sum_j w[c, j] * X_g[j, m] + bias[c], act_lo, act_hi),
 * where channel c belongs to group c / (channels / groups). */
typedef struct qlp_layer {
    const char *name;
    int64_t channels;  /* output channels = quantization channels */
    int64_t k;         /* weights per channel (= rows of X_g) */
    int groups;        /* 1 for dense layers; channels for depthwise */
    const float *w;    /* [channels x k], row per channel */
    const float *bias; /* [channels] or NULL */
    float act_lo, act_hi; /* -INFINITY/INFINITY when no activation */
    int64_t columns;   /* M: columns available from the cached inputs */
    /* Fills out [groups][k][count] (group-major, then row, then column) with
     * the input columns idx[0..count); returns 0 or -1 on failure. */
    int (*get_columns)(void *user, const int64_t *idx, int64_t count, float *out);
    void *user;
    uint64_t seed;     /* for reproducible sampling */
} qlp_layer;

/* ---- results ------------------------------------------------------------- */

typedef enum { QLP_OK = 0, QLP_ERROR = 1, QLP_CANCELLED = 2 } qlp_result;

typedef struct qlp_plugin {
    int abi_version; /* QLP_ABI_VERSION */
    const char *name;    /* as written on the command line, [a-z0-9_-]+ */
    const char *summary; /* one line */
    unsigned kinds;      /* QLP_KIND_* bits; each kind's callback must be set */
    int n_params;        /* at most 16 */
    const qlp_param_def *params;

    /* Activation algorithms: choose the clipping range [*lo, *hi] for a tensor
     * to be quantized to fmt. For symmetric formats the engine uses
     * max(|lo|, |hi|). err (errlen bytes) takes a message on QLP_ERROR. */
    qlp_result (*act_range)(const qlp_params *p, const qlp_hist *h, const qlp_format *fmt,
                            double *lo, double *hi, char *err, size_t errlen);

    /* Weight algorithms: per-channel ranges lo[c], hi[c] for w [channels x k]
     * (channels = 1 for per-tensor). */
    qlp_result (*weight_range)(const qlp_params *p, const float *w, int64_t channels,
                               int64_t k, const qlp_format *fmt, double *lo, double *hi,
                               char *err, size_t errlen);

    /* Optional for weight algorithms: chooses rounding. Given the layer and
     * the per-channel scale/zero point already fixed, writes the integer
     * weights q [channels x k] (each within [qmin, qmax]). NULL: round to
     * nearest, half to even. */
    qlp_result (*weight_round)(const qlp_params *p, const qlp_layer *layer,
                               const qlp_format *fmt, const float *scale,
                               const int32_t *zero_point, int32_t *q, const qlp_host *host,
                               char *err, size_t errlen);
} qlp_plugin;

typedef const qlp_plugin *(*qlp_entry_fn)(void);
/* The entry point every plugin defines (declared here so that plugins build
 * cleanly with -Wmissing-prototypes). */
const qlp_plugin *QLENS_PLUGIN_ENTRY(void);

#ifdef __cplusplus
}
#endif
#endif
