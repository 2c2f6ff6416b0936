/* Test module: its entry returns the plugin named by $QLP_TEST_CASE, so one
 * module covers every refusal rule. Unset, it is a sound plugin "multi" with
 * three parameters (float, int, float) used to test algorithm specs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/qlens-plugin.h"

static qlp_result act(const qlp_params *p, const qlp_hist *h, const qlp_format *fmt, double *lo,
                      double *hi, char *err, size_t errlen)
{
    *lo = h->min;
    *hi = h->max;
    return QLP_OK;
}

static qlp_result wgt(const qlp_params *p, const float *w, int64_t channels, int64_t k,
                      const qlp_format *fmt, double *lo, double *hi, char *err, size_t errlen)
{
    for (int64_t c = 0; c < channels; c++)
        lo[c] = hi[c] = 0;
    return QLP_OK;
}

#define P(key, type, d, lo, hi) {key, type, d, lo, hi, "help"}
static const qlp_param_def multi_params[] = {
    P("alpha", QLP_PARAM_FLOAT, 0.5, 0, 1),
    P("n", QLP_PARAM_INT, 8, 1, 64),
    P("eps", QLP_PARAM_FLOAT, 1e-6, 0, 1),
};
static const qlp_param_def dup_params[] = {P("a", QLP_PARAM_FLOAT, 0, 0, 1),
                                           P("a", QLP_PARAM_FLOAT, 0, 0, 1)};
static const qlp_param_def dflt_params[] = {P("k", QLP_PARAM_FLOAT, 30, 0.5, 20)};
static const qlp_param_def minmax_params[] = {P("k", QLP_PARAM_FLOAT, 1, 2, 1)};
static const qlp_param_def type_params[] = {P("k", (qlp_param_type)3, 1, 0, 2)};
static const qlp_param_def key_params[] = {P("Bad Key", QLP_PARAM_FLOAT, 1, 0, 2)};
static const qlp_param_def int_params[] = {P("n", QLP_PARAM_INT, 1.5, 0, 2)};
static const qlp_param_def nan_params[] = {P("x", QLP_PARAM_FLOAT, NAN, 0, 2)};
static qlp_param_def many_params[17];

#define PLUGIN(nm, k, a, w, np, pp) {QLP_ABI_VERSION, nm, "test case", k, np, pp, a, w, NULL}
#define BOTH (QLP_KIND_ACTIVATION | QLP_KIND_WEIGHT)
static const struct {
    const char *tcase;
    qlp_plugin p;
} cases[] = {
    {"multi", PLUGIN("multi", BOTH, act, wgt, 3, multi_params)},
    {"bare", PLUGIN("bare", QLP_KIND_WEIGHT, NULL, wgt, 0, NULL)},
    {"name", PLUGIN("Multi", BOTH, act, wgt, 0, NULL)},
    {"noname", PLUGIN(NULL, BOTH, act, wgt, 0, NULL)},
    {"nokind", PLUGIN("x", 0, act, wgt, 0, NULL)},
    {"badkind", PLUGIN("x", 5, act, wgt, 0, NULL)},
    {"noact", PLUGIN("x", BOTH, NULL, wgt, 0, NULL)},
    {"noweight", PLUGIN("x", QLP_KIND_WEIGHT, act, NULL, 0, NULL)},
    {"toomany", PLUGIN("x", BOTH, act, wgt, 17, many_params)},
    {"noschema", PLUGIN("x", BOTH, act, wgt, 2, NULL)},
    {"dup", PLUGIN("x", BOTH, act, wgt, 2, dup_params)},
    {"dflt", PLUGIN("x", BOTH, act, wgt, 1, dflt_params)},
    {"minmax", PLUGIN("x", BOTH, act, wgt, 1, minmax_params)},
    {"type", PLUGIN("x", BOTH, act, wgt, 1, type_params)},
    {"key", PLUGIN("x", BOTH, act, wgt, 1, key_params)},
    {"int", PLUGIN("x", BOTH, act, wgt, 1, int_params)},
    {"nan", PLUGIN("x", BOTH, act, wgt, 1, nan_params)},
};

const qlp_plugin *QLENS_PLUGIN_ENTRY(void)
{
    const char *want = getenv("QLP_TEST_CASE");
    if (!want)
        want = "multi";
    if (strcmp(want, "null") == 0)
        return NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (strcmp(cases[i].tcase, want) == 0)
            return &cases[i].p;
    return NULL;
}
