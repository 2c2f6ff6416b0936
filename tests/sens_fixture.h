/* The shipped example set up for the sensitivity, autoprec and curve unit
 * tests (tests/test_sensitivity.c, test_autoprec.c, test_curve.c): the
 * model, a few calibration and evaluation samples, a minmax int8 config,
 * and the checks and full-run references they share. */
#ifndef QL_TESTS_SENS_FIXTURE_H
#define QL_TESTS_SENS_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/calibrate.h"
#include "engine/exec.h"
#include "engine/sensitivity.h"

#define SF_SAMPLES 24
#define SF_BATCH 8
#define SF_BATCHES (SF_SAMPLES / SF_BATCH)

typedef struct sf_fixture {
    ql_model *m;
    ql_dataset *calib, *eval;
    int64_t *labels;
    ql_plugins *ps;
    ql_qnet *q;
    ql_qconfig *c;
    ql_calib_stats *stats;
} sf_fixture;

/* Loads the example into f; plant (may be NULL) changes the model before
 * it is calibrated. 0, or -1 with the reason on stderr. */
int sf_load(sf_fixture *f, int (*plant)(sf_fixture *f));
/* Frees everything f holds, and f. */
void sf_unload(sf_fixture *f);
/* cmocka setup and teardown: a fixture loaded without a plant. */
int sf_setup(void **state);
int sf_teardown(void **state);

/* The table of config c in mode on the evaluation samples (caller frees);
 * fails the test unless it is complete. */
ql_sens_table *sf_analyse(sf_fixture *f, const ql_qconfig *c, ql_sens_mode mode, int threads,
                          bool brute, int64_t cache);
/* Fails unless a and b are equal bit for bit, row by row. */
void sf_assert_same(const ql_sens_table *a, const ql_sens_table *b, const char *what);
/* The row of layer in t, done or pending; NULL if none. */
const ql_sens_row *sf_row_of(const ql_sens_table *t, int layer);

/* An executor observer (observer_user: an sf_obs) keeping a copy of the
 * first tensor seen for each of n values; copy[i] must start NULL. */
typedef struct sf_obs {
    int n;
    const int *want;
    ql_tensor **copy;
} sf_obs;
bool sf_observer(void *user, const ql_graph *g, int node, int value, const ql_tensor *t);

/* Runs the model on every evaluation batch under plan (NULL: float), one
 * thread: y[b] gets output 0 of batch b, w[i * SF_BATCHES + b] the value
 * want[i] of batch b (after its quantizer), for n_want values (at most
 * 64). The caller frees them. */
void sf_ref_run(sf_fixture *f, const ql_exec_quant *plan, int n_want, const int *want,
                ql_tensor **y, ql_tensor **w);
/* The metrics of the outputs yq against the float outputs yf, batch by
 * batch (both of sf_ref_run). */
ql_metrics sf_metrics(sf_fixture *f, ql_tensor *const *yf, ql_tensor *const *yq);
/* The metrics of config c's outputs, run in full, against the float
 * outputs yf (of sf_ref_run): what an all-but row must equal. */
ql_metrics sf_config_metrics(sf_fixture *f, const ql_qconfig *c, ql_tensor *const *yf);

#endif
