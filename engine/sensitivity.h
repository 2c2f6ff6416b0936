/* Per-layer sensitivity analysis and automatic mixed precision.
 *
 * For each layer, the model outputs on the given samples are compared with
 * the float reference when only that layer is quantized ("single"), when
 * everything but that layer is quantized ("all-but"), or with only its
 * weights / only its activations quantized. A layer's quantizers are its
 * weight and bias quantizers and its output quantizer (a graph input's goes
 * with the layers reading it). Runs are incremental: the
 * reference activations are cached once, and each layer re-executes only
 * the nodes its change can reach, fed from the cache; layers run in
 * parallel, one executor per thread. Results are bit-identical to a full
 * re-execution and to any thread count. */
#ifndef QL_SENSITIVITY_H
#define QL_SENSITIVITY_H

#include <stdbool.h>
#include <stdint.h>

#include "calibrate.h"
#include "dataset.h"
#include "metrics.h"
#include "onnx.h"
#include "qconfig.h"
#include "qnet.h"
#include "status.h"

#define QL_SENS_MODE_LIST(X)                                               \
    X(QL_SENS_SINGLE, "single", "only this layer quantized")               \
    X(QL_SENS_ALL_BUT, "all-but", "everything quantized but this layer")   \
    X(QL_SENS_WEIGHTS, "weights", "only this layer's weights quantized")   \
    X(QL_SENS_ACTIVATIONS, "activations", "only this layer's output quantized")
#define QL_SENS_MODE_ENUM_(e, s, h) e,
typedef enum { QL_SENS_MODE_LIST(QL_SENS_MODE_ENUM_) QL_SENS_MODE_COUNT } ql_sens_mode;
#undef QL_SENS_MODE_ENUM_
const char *ql_sens_mode_name(ql_sens_mode m);
bool ql_sens_mode_parse(const char *s, ql_sens_mode *out);

/* Metrics a table can be sorted by ("worst first" means lowest cosine,
 * highest mse, ...). */
#define QL_SENS_METRIC_LIST(X)         \
    X(QL_SM_COSINE, "cosine", 0)       \
    X(QL_SM_MSE, "mse", 1)             \
    X(QL_SM_SQNR, "sqnr_db", 0)        \
    X(QL_SM_MAX_ABS, "max_abs", 1)     \
    X(QL_SM_TOP1_AGREE, "top1_agree", 0) \
    X(QL_SM_TOP1, "top1", 0)           \
    X(QL_SM_LOCAL_SQNR, "local_sqnr_db", 0)
#define QL_SM_ENUM_(e, s, hi) e,
typedef enum { QL_SENS_METRIC_LIST(QL_SM_ENUM_) QL_SM_COUNT } ql_sens_metric;
#undef QL_SM_ENUM_
const char *ql_sens_metric_name(ql_sens_metric m);
bool ql_sens_metric_parse(const char *s, ql_sens_metric *out);

typedef struct ql_sens_row {
    int layer;              /* index into ql_qnet.layers */
    const char *name;       /* layer name (owned by the graph) */
    const char *op;         /* main node's op type */
    ql_prec precision;      /* the layer's precision in the config */
    ql_metrics m;           /* model outputs vs float */
    double local_sqnr_db;   /* the layer's own output, only it quantized, vs float */
    double weight_share;    /* share of the local error due to weights, in [0, 1]; NaN if none */
    bool done;              /* false for rows not reached before a cancel */
} ql_sens_row;

typedef struct ql_sens_table {
    ql_sens_mode mode;
    int n;
    ql_sens_row *rows;      /* owned, in layer order until sorted */
    bool partial;           /* cancelled before every row was done */
    int64_t samples;
    bool has_labels;
} ql_sens_table;

typedef bool (*ql_sens_progress_fn)(void *user, int64_t done, int64_t total);

typedef struct ql_sens_opts {
    ql_sens_mode mode;
    int n_threads;               /* <= 0: online cores */
    int64_t batch;               /* <= 0: 32 */
    int64_t cache_bytes;         /* activation cache budget; <= 0: 1 GiB. Beyond it the
                                  * samples are processed in chunks that fit */
    bool brute_force;            /* full re-execution per layer (tests and bench) */
    const char *only_layer;      /* optional: analyse just this layer */
    ql_sens_progress_fn progress;
    void *progress_user;
    const volatile int *cancel;
    /* autoprec: rank by gain per cost on this march (NULL: by gain alone) */
    const char *march;
} ql_sens_opts;

/* Analyses every quantized layer of the config (float layers too in
 * all-but mode, where they are reported as they are). The config must
 * hold the encodings its settings call for (ql_qsim_build's rule).
 * labels may be NULL. On cancel returns QL_OK with table->partial set and
 * the finished rows marked done. */
ql_status ql_sensitivity(ql_model *m, const ql_qnet *q, const ql_qconfig *c,
                         const ql_dataset *d, const int64_t *labels, const ql_sens_opts *o,
                         ql_sens_table **out, ql_error *err);
void ql_sens_table_free(ql_sens_table *t);
/* Sorts rows worst first by metric (ties: layer order). */
void ql_sens_table_sort(ql_sens_table *t, ql_sens_metric metric);
double ql_sens_row_metric(const ql_sens_row *r, ql_sens_metric metric);

/* Writes the table as CSV through libcsv (header row, stable columns:
 * layer,op,precision,cosine,mse,sqnr_db,max_abs,top1_agree,top1,local_sqnr_db,
 * weight_share,done), atomically. */
ql_status ql_sens_table_write_csv(const ql_sens_table *t, const char *path, ql_error *err);

/* ---- automatic mixed precision ------------------------------------------ */

/* A target "METRIC>=VALUE" / "METRIC<=VALUE": cosine, sqnr_db, top1_agree,
 * top1 (needs labels), mse, max_abs, top1_drop (float top-1 minus quantized,
 * in percentage points, needs labels). */
typedef struct ql_target {
    char metric[32];
    bool at_least;
    double value;
} ql_target;
ql_status ql_target_parse(const char *s, ql_target *out, ql_error *err);
bool ql_target_met(const ql_target *t, const ql_metrics *m);
/* The target's metric on m; NaN when it needs labels m has none of. */
double ql_target_value(const ql_target *t, const ql_metrics *m);

typedef struct ql_autoprec_step {
    int layer;
    ql_prec from, to;
    ql_metrics after;      /* model metrics once this layer is raised */
} ql_autoprec_step;

typedef struct ql_autoprec_result {
    int n_steps;
    ql_autoprec_step *steps; /* owned, in the order chosen */
    ql_metrics before;
    bool met;                /* the target holds after the last step */
} ql_autoprec_result;

/* Greedy: rank layers by all-but sensitivity (gain on the target's metric;
 * per cost with o->march, cost = MACs until march data exists), raise
 * them one at a time (to int16 when prefer_int16, else float; int16
 * layers go to float) and stop as soon as the target holds. The chosen
 * layers are written into c as overrides with a reason, and the encodings
 * are brought in line with ql_calib_update (statistics only: weights keep
 * their encodings). */
ql_status ql_autoprec(ql_model *m, const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *stats,
                      const ql_plugins *ps, const ql_dataset *d, const int64_t *labels,
                      const ql_target *target, bool prefer_int16, const ql_sens_opts *o,
                      ql_autoprec_result *res, ql_error *err);
void ql_autoprec_result_clear(ql_autoprec_result *r);

#endif
