/* Per-layer sensitivity analysis and automatic mixed precision.
 *
 * For each layer, the model outputs on the given samples are compared with
 * the float reference when only that layer is quantized ("single"), when
 * the config is kept but that layer is set to float ("all-but": exactly
 * what the config with that override computes, so a float layer's output
 * stays quantized where quantized layers read it), or with only its
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
    X(QL_SENS_ALL_BUT, "all-but", "the config with this layer set to float") \
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
    ql_prec raised_to;      /* all-but: the precision the layer is set to */
    bool unchanged;         /* all-but: that setting changes no quantizer of the model */
} ql_sens_row;

/* rows[0..n) are results; after a cancel, rows[n..n + n_pending) are the
 * layers not finished, with no metrics (m.n == 0), listed so that the CSV
 * can show them as not done. */
typedef struct ql_sens_table {
    ql_sens_mode mode;
    int n;
    int n_pending;
    ql_sens_row *rows;      /* owned, in layer order until sorted */
    bool partial;           /* cancelled before every row was done */
    int64_t samples;
    bool has_labels;
    ql_metrics base;        /* all-but: the config as it is, measured by the same runs
                             * (a row whose setting changes nothing has these metrics) */
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
    /* autoprec: rank by gain weighed by cost on this march (NULL: by gain alone) */
    const char *march;
    /* all-but: set int8 layers to int16 instead of float (int16 layers
     * still go to float) */
    bool raise_int16;
    /* all-but: where a layer's new precision changes the bits of a tensor
     * (a boundary between int8 and int16 layers), its encoding is computed
     * from these statistics as ql_calib_update would; NULL: the config's
     * range of that tensor at the new bits */
    const ql_calib_stats *stats;
    const ql_plugins *plugins;
    /* all-but with statistics: the config whose encodings a raised config
     * starts from (the `before` of ql_calib_update; its settings are the
     * ones those encodings were made for); NULL: c. autoprec passes the
     * config it started from, which is how it makes the configs it
     * measures. */
    const ql_qconfig *enc_from;
} ql_sens_opts;

/* Analyses every quantized layer of the config (float layers too in
 * all-but mode, where they are reported as they are). The config must
 * hold the encodings its settings call for (ql_qsim_build's rule).
 * labels may be NULL. On cancel returns QL_OK with table->partial set, the
 * finished rows first and the others pending. */
ql_status ql_sensitivity(ql_model *m, const ql_qnet *q, const ql_qconfig *c,
                         const ql_dataset *d, const int64_t *labels, const ql_sens_opts *o,
                         ql_sens_table **out, ql_error *err);
void ql_sens_table_free(ql_sens_table *t);
/* Sorts the result rows worst first by metric (ties: layer order). */
void ql_sens_table_sort(ql_sens_table *t, ql_sens_metric metric);
double ql_sens_row_metric(const ql_sens_row *r, ql_sens_metric metric);

/* Writes the table as CSV through libcsv (header row, stable columns:
 * layer,op,precision,cosine,mse,sqnr_db,max_abs,top1_agree,top1,local_sqnr_db,
 * weight_share,done), atomically: the results, then the pending rows with
 * empty metrics and done 0. */
ql_status ql_sens_table_write_csv(const ql_sens_table *t, const char *path, ql_error *err);

/* ---- automatic mixed precision ------------------------------------------ */

/* A target "METRIC>=VALUE" for cosine, sqnr_db, top1_agree, top1 (needs
 * labels), or "METRIC<=VALUE" for mse, max_abs, top1_drop (float top-1
 * minus quantized, in percentage points, needs labels). Parsing refuses
 * the other direction and values no model reaches (cosine or a fraction
 * above 1, an error below 0, a drop below -100): raising layers moves the
 * model towards float, which has cosine 1 and no error. */
typedef struct ql_target {
    char metric[32];
    bool at_least;
    double value;
} ql_target;
ql_status ql_target_parse(const char *s, ql_target *out, ql_error *err);
bool ql_target_met(const ql_target *t, const ql_metrics *m);
/* The target's metric on m; NaN when it needs labels m has none of. */
double ql_target_value(const ql_target *t, const ql_metrics *m);

/* The march named s (its canonical name), or NULL; QL_MARCH_NAMES lists them. */
const char *ql_autoprec_march(const char *s);
/* ---- the cumulative curve ---- */

typedef struct ql_curve_step {
    int layer;
    const char *name;      /* owned by the graph */
    const char *op;
    ql_prec from, to;
    ql_metrics m;          /* the config with this layer and every earlier one raised */
} ql_curve_step;

typedef struct ql_curve {
    ql_prec to;            /* int16 or float */
    ql_sens_mode ranked_mode; /* the mode of the table that ranked the layers */
    ql_metrics base;       /* the config as given */
    int n;                 /* steps measured */
    int n_total;           /* steps planned: after a cancel, steps[n..n_total) were not
                            * measured (m.n == 0) */
    ql_curve_step *steps;  /* owned, in the order raised */
    bool partial;          /* cancelled before the last step */
    int64_t samples;
    bool has_labels;
} ql_curve;

/* The cumulative curve of a sensitivity table: its layers, most sensitive
 * first (worst first in single, weights and activations modes; best first
 * in all-but mode, whose rows measure the raise itself), raised one after
 * another to int16 (int8 layers only) or to float (int8 and int16 layers),
 * at most max_steps of them (<= 0: all), the model measured on d after
 * each step. Each step's config is c with the overrides made so far, its
 * encodings brought in line from c's in one step from stats (required), as
 * `set layer L precision P` makes them. Uses o->n_threads, batch, cancel
 * and progress (called with the steps done); on cancel returns QL_OK with
 * the steps done and partial set (the others listed after them). */
ql_status ql_sens_curve(ql_model *m, const ql_qnet *q, const ql_qconfig *c,
                        const ql_sens_table *ranked, const ql_calib_stats *stats,
                        const ql_plugins *ps, const ql_dataset *d, const int64_t *labels,
                        bool to_int16, int max_steps, const ql_sens_opts *o, ql_curve **out,
                        ql_error *err);
void ql_curve_free(ql_curve *c);
/* CSV (libcsv quoting): step,layer,op,from,to, the metrics and done; step
 * 0 is the config as given; steps not measured have no metrics and done=0.
 * Written atomically. */
ql_status ql_curve_write_csv(const ql_curve *c, const char *path, ql_error *err);

#define QL_MARCH_NAMES "nash-b-lite, nash-b, nash-b-plus, nash-e, nash-m, nash-h or nash-p"

typedef enum {
    QL_AP_KEPT,     /* the raise improved the metric (or was forced) and stays */
    QL_AP_REVERTED, /* it did not improve the metric: undone at once */
    QL_AP_DROPPED,  /* kept, then lowered again: the target holds without it */
} ql_ap_outcome;

typedef struct ql_autoprec_step {
    int layer;
    ql_prec from, to;
    int pass;              /* the all-but pass that ranked it, from 1 */
    bool forced;           /* made in the last pass, kept whatever it did */
    double predicted;      /* the target's metric the all-but pass predicted */
    ql_metrics after;      /* in tried: measured once this layer was raised; in steps:
                            * the original config with the kept raises up to this one */
    ql_ap_outcome outcome;
    ql_metrics lowered;    /* QL_AP_DROPPED: measured once lowered again */
    int lowered_seq;       /* ... the order of the lowering, from 1 */
} ql_autoprec_step;

typedef struct ql_autoprec_result {
    int n_steps;
    ql_autoprec_step *steps; /* owned: the raises the config keeps, in the order made:
                              * the cumulative curve */
    int n_tried;
    ql_autoprec_step *tried; /* owned: every raise evaluated, in order, with its outcome */
    ql_metrics before;
    ql_metrics final;        /* the returned config's metrics */
    bool met;                /* the target holds on final */
    int passes;              /* all-but passes run */
    /* prefer int16: the int16 raises that help ran out before the target
     * held (they raise activation bits only), and float raises followed;
     * int16_best is the target's metric at that point */
    bool int16_exhausted;
    double int16_best;
    int float_pass;          /* ... and the first pass of float raises */
    /* no single float raise improved the metric before the target held,
     * and the remaining raises were made in order of predicted effect,
     * kept whatever each did alone; forced_from is the metric before */
    bool forced;
    double forced_from;
} ql_autoprec_result;

/* Greedy, on measured effects. Each pass ranks the layers by the exact
 * all-but effect of the raise (int8 layers to int16 while prefer_int16
 * raises help, else every layer to float), leaving out raises that change no
 * quantizer or are not predicted to improve the target's metric (for the
 * whole-sample metrics top1, top1_agree and top1_drop, an unchanged metric
 * with a better SQNR counts as an improvement). With o->march the gain is
 * weighed by cost: gain * mean / (mean + cost), cost = MACs until march
 * data exists, mean over the ranked layers. Raises are then made in that
 * order, each evaluated on the whole data and undone unless it improves the
 * metric, until the target holds. A pass that kept raises is followed by
 * another; when int16 raises run out, float raises follow; when no float
 * raise helps alone, a last pass makes every remaining raise that changes
 * something, in order of predicted effect. Once the target holds, each kept
 * raise is lowered again (least measured gain first, in rounds until none
 * can go) and stays lowered if the target still holds. Every config
 * measured is the original with overrides of precision, its encodings
 * brought in line in one ql_calib_update from `stats` (an encoding the
 * overrides do not touch is kept bit for bit); c becomes the one with the
 * kept raises, each layer's override with a reason. On failure (or
 * cancel) c is as it came. */
ql_status ql_autoprec(ql_model *m, const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *stats,
                      const ql_plugins *ps, const ql_dataset *d, const int64_t *labels,
                      const ql_target *target, bool prefer_int16, const ql_sens_opts *o,
                      ql_autoprec_result *res, ql_error *err);
void ql_autoprec_result_clear(ql_autoprec_result *r);

#endif
