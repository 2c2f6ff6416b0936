/* Calibration: one streaming statistics pass over calibration data, then
 * encodings for every quantizer from the statistics and the weights, each
 * through the algorithm plugin the config names for that layer. Because the
 * statistics are kept, re-encoding after a settings change needs no data. */
#ifndef QL_CALIBRATE_H
#define QL_CALIBRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "calib_stats.h"
#include "dataset.h"
#include "onnx.h"
#include "plugin.h"
#include "qconfig.h"
#include "qnet.h"
#include "status.h"

/* Progress of a phase ("statistics", "weights", "adaround LAYER"); return
 * false to cancel. Messages for the user go through log. */
typedef bool (*ql_calib_progress_fn)(void *user, const char *phase, int64_t done,
                                     int64_t total);
typedef void (*ql_log_fn)(void *user, const char *msg);

typedef struct ql_calib_opts {
    int n_threads;                 /* <= 0: online cores */
    int64_t batch;                 /* <= 0: 32 */
    ql_calib_progress_fn progress; /* optional */
    void *progress_user;
    ql_log_fn log;                 /* optional */
    void *log_user;
    const volatile int *cancel;    /* optional */
    int64_t cache_bytes;           /* layer-input cache for rounding algorithms; <= 0: 512 MiB */
} ql_calib_opts;

/* Streams d through the float model and records statistics of every
 * activation quantizer site (ql_qnet.value_site). */
ql_status ql_calib_collect(ql_model *m, const ql_qnet *q, const ql_dataset *d,
                           const ql_calib_opts *o, ql_calib_stats **out, ql_error *err);

/* Computes the encodings of every activation, weight and bias quantizer the
 * config's settings call for (replacing c's tensor entries). Activation
 * ranges come from s; weight ranges from the weights; a weight algorithm
 * with a rounding step (AdaRound) draws layer inputs from calib (may be NULL
 * when no layer needs it). On failure c keeps its previous encodings. */
ql_status ql_calib_encode(ql_model *m, const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *s,
                          const ql_plugins *ps, const ql_dataset *calib,
                          const ql_calib_opts *o, ql_error *err);

/* Brings c's encodings in line with its settings after a change, without
 * touching data where possible. `before` (may be NULL) holds the settings
 * c's encodings were made for: an activation encoding whose bits and
 * algorithm are unchanged since then is kept bit for bit, the others are
 * recomputed from s (milliseconds each); weight encodings that still fit the layer's bits and
 * per-channel setting are kept bit for bit (other ones, and those of
 * force_layer if >= 0, are recomputed with the layer's weight algorithm,
 * drawing on calib for rounding algorithms), bias encodings follow their
 * inputs, and entries no longer needed are dropped. */
ql_status ql_calib_update(ql_model *m, const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *s,
                          const ql_plugins *ps, const ql_dataset *calib,
                          const ql_calib_opts *o, const ql_qconfig *before, int force_layer,
                          ql_error *err);

/* Re-encodes only the activation quantizer of one value (after a change of
 * its layer's algorithm or precision): no data, no weights. */
ql_status ql_calib_encode_act(const ql_qnet *q, ql_qconfig *c, const ql_calib_stats *s,
                              const ql_plugins *ps, int value, int bits, ql_error *err);

#endif
