/* The quant config: a versioned JSON document (cJSON) that holds the model
 * fingerprint, global defaults, per-layer overrides and the computed
 * encodings of every quantized tensor, so that loading it reproduces a
 * quantized model bit for bit. Format documented in qlens-config(5). */
#ifndef QL_QCONFIG_H
#define QL_QCONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "quant.h"
#include "status.h"

#define QL_QCONFIG_VERSION 1

/* Precision of a layer: its output activation bits, or not quantized. */
#define QL_PREC_LIST(X)            \
    X(QL_PREC_INT8, "int8", 8)     \
    X(QL_PREC_INT16, "int16", 16)  \
    X(QL_PREC_FLOAT, "float", 0)
#define QL_PREC_ENUM_(e, s, b) e,
typedef enum { QL_PREC_LIST(QL_PREC_ENUM_) QL_PREC_COUNT } ql_prec;
#undef QL_PREC_ENUM_
const char *ql_prec_name(ql_prec p);
bool ql_prec_parse(const char *s, ql_prec *out);
int ql_prec_bits(ql_prec p); /* 8, 16, or 0 for float */

/* Which fields of a ql_qsettings are set (layer overrides set only some). */
enum {
    QL_QS_PRECISION = 1u << 0,
    QL_QS_ACT_ALGO = 1u << 1,
    QL_QS_WEIGHT_ALGO = 1u << 2,
    QL_QS_WEIGHT_BITS = 1u << 3,
    QL_QS_PER_CHANNEL = 1u << 4,
    QL_QS_ALL = (1u << 5) - 1,
};

#define QL_ALGO_MAX 256

typedef struct ql_qsettings {
    unsigned mask;                   /* QL_QS_* bits */
    ql_prec precision;
    char act_algo[QL_ALGO_MAX];      /* "NAME[:key=value,...]", canonical form */
    char weight_algo[QL_ALGO_MAX];
    int weight_bits;                 /* 2..16 */
    bool per_channel;
} ql_qsettings;

typedef struct ql_qlayer_cfg {
    char *name;        /* layer (node) name, owned */
    ql_qsettings s;    /* only the fields in s.mask override the defaults */
    char *reason;      /* owned, may be NULL: why the override exists (autoprec) */
} ql_qlayer_cfg;

/* A quantized tensor's encoding; weights chosen by a rounding algorithm
 * also carry their integer values so loading reproduces them exactly. */
typedef struct ql_qtensor_cfg {
    char *name;        /* tensor (value) name, owned */
    ql_encoding enc;
    int64_t n_q;       /* 0, or the element count of the weight */
    int32_t *q;        /* owned, n_q integers, or NULL */
} ql_qtensor_cfg;

typedef struct ql_qconfig {
    int version;               /* QL_QCONFIG_VERSION */
    char *model_file;          /* base name of the model it was made for, owned */
    uint64_t fingerprint;      /* ql_model.fingerprint */
    ql_qsettings defaults;     /* mask == QL_QS_ALL */
    int n_layers;
    ql_qlayer_cfg *layers;
    int64_t calib_samples;     /* samples the encodings were computed from */
    int n_tensors;
    ql_qtensor_cfg *tensors;
} ql_qconfig;

/* Target defaults: int8, kl activations, minmax weights, 8-bit per-channel. */
ql_qconfig *ql_qconfig_new(void);
void ql_qconfig_free(ql_qconfig *c);
ql_qconfig *ql_qconfig_clone(const ql_qconfig *c);

/* Effective settings of a layer (defaults overlaid with its override). */
ql_qsettings ql_qconfig_layer_settings(const ql_qconfig *c, const char *layer);
/* Finds or adds the override of a layer; NULL on OOM. */
ql_qlayer_cfg *ql_qconfig_layer(ql_qconfig *c, const char *layer);
/* Removes a layer's override (or one field of it, mask bits). */
void ql_qconfig_reset_layer(ql_qconfig *c, const char *layer, unsigned mask);
/* Finds or adds a tensor entry; NULL on OOM. */
ql_qtensor_cfg *ql_qconfig_tensor(ql_qconfig *c, const char *name);
const ql_qtensor_cfg *ql_qconfig_find_tensor(const ql_qconfig *c, const char *name);
void ql_qconfig_clear_tensors(ql_qconfig *c);

/* JSON. Saving is deterministic (same config -> same bytes) and atomic
 * (temporary file + rename). Loading refuses unknown keys, wrong types,
 * bad values, with the JSON path in the message ("layers.conv1.precision:
 * expected one of int8, int16, float"). Checking against a model (layer and
 * tensor names exist, fingerprint matches, encodings fit their tensors and
 * the settings) is ql_qconfig_check in qnet.h, which knows the model. */
char *ql_qconfig_to_json(const ql_qconfig *c, ql_error *err); /* malloc'd */
ql_status ql_qconfig_from_json(const char *text, const char *source, ql_qconfig **out,
                               ql_error *err);
ql_status ql_qconfig_save(const ql_qconfig *c, const char *path, ql_error *err);
ql_status ql_qconfig_load(const char *path, ql_qconfig **out, ql_error *err);

#endif
