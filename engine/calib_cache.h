/* Rounding algorithms (AdaRound) learn from a layer's inputs: this module
 * caches the float inputs of one layer on the calibration data (bounded by
 * ql_calib_opts.cache_bytes; beyond it, fewer samples are used and the log
 * says so) and serves them to the plugin as im2col columns. */
#ifndef QL_CALIB_CACHE_H
#define QL_CALIB_CACHE_H

#include "calibrate.h"

/* Runs a's weight_round for layer L with the scales of enc, storing the
 * chosen integers in t->q (weight element order). Layers whose geometry has
 * no column view (ConvTranspose, 3-D convolutions, MatMul with a batched
 * weight) keep nearest rounding and the log says so. */
ql_status ql_calib_round_layer(ql_model *m, const ql_qnet *q, const ql_qlayer *L,
                               const ql_algo *a, const ql_encoding *enc,
                               const ql_dataset *calib, const ql_calib_opts *o,
                               ql_qtensor_cfg *t, ql_error *err);

/* A weight as rows: channel axis moved to the front, the other axes in
 * order (axis < 0: one row). rows holds numel(w) values. */
void ql_weight_rows(const ql_tensor *w, int axis, float *rows);
/* The inverse, for integer weights. */
void ql_weight_unrows_i32(const ql_tensor *w, int axis, const int32_t *rows, int32_t *q);

#endif
