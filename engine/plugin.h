/* Finding and loading calibration plugins (shared modules, see
 * qlens-plugin.h), and parsing algorithm specs "NAME[:key=value,...]"
 * against a plugin's parameter schema. */
#ifndef QL_PLUGIN_H
#define QL_PLUGIN_H

#include <stdbool.h>

#include "plugins/qlens-plugin.h"
#include "status.h"

typedef struct ql_plugin_info {
    const qlp_plugin *p; /* NULL when refused */
    char *path;          /* owned: the module file */
    char *refused;       /* owned: why it was refused, or NULL */
    void *handle;        /* dlopen handle */
} ql_plugin_info;

typedef struct ql_plugins {
    int n;
    ql_plugin_info *items; /* loaded first, in search order; refused ones kept for listing */
    int n_dirs;
    char **dirs;           /* owned: the folders searched, in order (existing or not) */
} ql_plugins;

/* Scans, in order: each folder of $QLENS_PLUGIN_PATH (colon-separated), the
 * build tree (plugins/.libs next to the running program), and the install
 * folder (QL_PLUGIN_DIR). Every *.so is opened; a module with a wrong ABI
 * version, no entry symbol, missing callbacks or a malformed schema is kept
 * with a `refused` reason and never used. A name found twice: the first wins,
 * later ones are refused as shadowed (so $QLENS_PLUGIN_PATH can override). Fails only on OOM. */
ql_status ql_plugins_scan(ql_plugins **out, ql_error *err);
/* An empty set (to fill with ql_plugins_add_file), or NULL on OOM. */
ql_plugins *ql_plugins_new(void);
/* Loads one module file (used by tests and --plugin FILE). A refused module
 * is kept in the set all the same, and the call fails with "PATH: reason". */
ql_status ql_plugins_add_file(ql_plugins *ps, const char *path, ql_error *err);
void ql_plugins_free(ql_plugins *ps);
/* The usable plugin of that name providing `kind`, or NULL. */
const qlp_plugin *ql_plugins_find(const ql_plugins *ps, const char *name, qlp_kind kind);

/* A parsed algorithm: plugin plus parameter values in schema order. */
typedef struct ql_algo {
    const qlp_plugin *p;
    int n;
    double v[16];
} ql_algo;

/* Parses "NAME[:key=value,...]": the plugin must exist and be of `kind`,
 * keys must be in its schema, values numbers within [min, max] (integers for
 * INT params). Missing keys take defaults. */
ql_status ql_algo_parse(const ql_plugins *ps, const char *spec, qlp_kind kind, ql_algo *out,
                        ql_error *err);
/* Canonical text of an algorithm: "NAME" plus every non-default parameter
 * in schema order, each value as ql_algo_num writes it ("percentile:p=99.9").
 * Truncated to fit n. */
void ql_algo_format(const ql_algo *a, char *buf, size_t n);
/* A parameter value as ql_algo_format writes it: the fewest digits that read
 * back exactly ("0.25", "30", "1e-07"). */
void ql_algo_num(double v, char *buf, size_t n);

#endif
