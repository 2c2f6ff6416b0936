/* Calibration and evaluation inputs and labels: a folder of per-sample .npy
 * files (sorted by name), one batched .npy (first axis = samples), or an IDX
 * file (optionally gzipped); labels as an integer .npy or IDX file. */
#ifndef QL_DATASET_H
#define QL_DATASET_H

#include <stdint.h>

#include "graph.h"
#include "status.h"
#include "tensor.h"

typedef struct ql_dataset {
    ql_tensor *samples;   /* owned; dims[0] = number of samples, any dtype as stored */
    int64_t n;
    char *source;         /* path, for messages */
} ql_dataset;

/* Loads data from a path (kind detected from the path and file magic).
 * limit > 0 keeps only the first `limit` samples. */
ql_status ql_dataset_load(const char *path, int64_t limit, ql_dataset **out, ql_error *err);
void ql_dataset_free(ql_dataset *d);

/* Checks the samples against a model input value and converts them to the
 * input's dtype (integers to float by value). Per-sample shape must equal the
 * input shape without its batch dimension; leading size-1 dims may be
 * missing (28x28 samples feed a [N,1,28,28] input). Fixed dims other than
 * batch are enforced; NaN/Inf are reported with the sample index. On success
 * the dataset's samples are reshaped to [n, <input dims...>]. */
ql_status ql_dataset_conform(ql_dataset *d, const ql_value *input, ql_error *err);

/* A view of samples [first, first+count) as a batch tensor (not owning). */
ql_tensor ql_dataset_batch(const ql_dataset *d, int64_t first, int64_t count);

/* Labels: integer class ids, one per sample. */
ql_status ql_labels_load(const char *path, int64_t limit, int64_t **labels, int64_t *n,
                         ql_error *err);

/* .npy files (format 1.0-3.0, little-endian, C order; f32/f64/int/uint/bool,
 * f64 converted to f32). */
ql_status ql_npy_load(const char *path, ql_tensor **out, ql_error *err);
ql_status ql_npy_load_buffer(const void *buf, size_t len, const char *name, ql_tensor **out,
                             ql_error *err);
/* Writes atomically (temporary file in the same folder, then rename). */
ql_status ql_npy_save(const char *path, const ql_tensor *t, ql_error *err);

/* Reads a whole file into memory, gunzipping when it starts with the gzip
 * magic. *buf is malloc'd. */
ql_status ql_read_file(const char *path, bool gunzip, void **buf, size_t *len, ql_error *err);

#endif
