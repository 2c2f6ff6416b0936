/* Internal to the quant config: the validation shared by the writer
 * (qconfig.c) and the reader (qconfig_read.c), so that a config that saves
 * always loads and both report a problem in the same words. */
#ifndef QL_QCONFIG_PRIV_H
#define QL_QCONFIG_PRIV_H

#include <stddef.h>

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
/* Appends .key to a JSON path, quoted ("...") unless key is [A-Za-z0-9_-]+. */
void ql_qcfg_path_key(char *out, size_t n, const char *prefix, const char *key);

#endif
