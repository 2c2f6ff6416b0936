/* Internal to the quant config: the validation shared by the writer
 * (qconfig.c) and the reader (qconfig_read.c), so that a config that saves
 * always loads and both report a problem in the same words; and the rules
 * an encoding must meet for the tensor it names, which the check against a
 * model (ql_qconfig_check, qnet.c) applies with the model's facts. */
#ifndef QL_QCONFIG_PRIV_H
#define QL_QCONFIG_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qconfig.h"

/* The built-in defaults (mask QL_QS_ALL). */
ql_qsettings ql_qcfg_default_settings(void);
/* Each returns NULL when valid, else what is wrong; the check_ functions
 * put the offending key (with [index]) in `where`, check_tensor may format
 * its message into buf. */
const char *ql_qcfg_check_algo(const char *algo);
const char *ql_qcfg_check_settings(const ql_qsettings *s, char *where, size_t wn);
const char *ql_qcfg_check_tensor(const ql_qtensor_cfg *t, char *where, size_t wn, char *buf,
                                 size_t bn);
/* What a model asks of the encoding of one tensor. */
typedef enum { QL_QCFG_ACT, QL_QCFG_WEIGHT, QL_QCFG_BIAS } ql_qcfg_kind;
typedef struct ql_qcfg_role {
    ql_qcfg_kind kind;
    int ndim;             /* -1: rank unknown */
    const int64_t *dims;  /* extents, < 0 unknown */
    int bits;             /* what the settings call for; 0: not quantized under them */
    int axis;             /* weights with bits: the axis the settings call for */
    const char *layer;    /* weights and biases: the layer whose settings apply */
    bool per_channel;     /* that layer's setting, for the message */
} ql_qcfg_role;
/* NULL when t fits its role (shape, stored integers, bits, axis), else what
 * is wrong, with the offending key in `where` ("bits", "axis", "scale", "q"). */
const char *ql_qcfg_check_role(const ql_qtensor_cfg *t, const ql_qcfg_role *r, char *where,
                               size_t wn, char *buf, size_t bn);
/* Appends .key to a JSON path, quoted ("...") unless key is [A-Za-z0-9_-]+. */
void ql_qcfg_path_key(char *out, size_t n, const char *prefix, const char *key);

#endif
